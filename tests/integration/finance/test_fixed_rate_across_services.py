"""Domain rule 5 across the three services: Dataverse and Finance in-process, the bridge as its
own process, all on the real broker and PostgreSQL. 7 h × 250 GBP on a contract that Finance
fixes at 1.25 GBP→USD, with the rate table at 1.30: the posted invoice, its voucher and the
accounting detail stamped back on the Dataverse actuals all say 1,750.00 GBP = 2,187.50 USD."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from tests.integration.bridge.conftest import bridge, start_bridge
from tests.integration.dataverse.conftest import dataverse
from tests.integration.dataverse.project_setup import ok
from tests.integration.dataverse.service_under_test import DataverseUnderTest
from tests.integration.finance.conftest import Finance
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

__all__ = ["bridge", "dataverse", "start_bridge"]  # fixtures of the other services' tests


async def _gbp_contract(dataverse: DataverseUnderTest) -> dict[str, str]:
    """A USMF customer with a GBP time-and-material contract at 250 an hour."""
    client = dataverse.client
    customer = ok(
        await client.post("/accounts", json={"name": "Contoso UK", "legal_entity": "USMF"}), 201
    )
    project = ok(
        await client.post(
            "/projects",
            json={"name": "UK", "legal_entity": "USMF", "customer_id": customer["account_id"]},
        ),
        201,
    )
    contract = ok(
        await client.post(
            "/contracts",
            json={
                "name": "UK contract",
                "legal_entity": "USMF",
                "customer_id": customer["account_id"],
                "currency": "GBP",
                "lines": [
                    {
                        "name": "Consulting",
                        "project_id": project["project_id"],
                        "billing_method": "time_and_material",
                        "bill_rate": "250",
                        "cost_rate": "100",
                    }
                ],
            },
        ),
        201,
    )
    return {
        "project_id": project["project_id"],
        "contract_id": contract["contract_id"],
        "line_id": contract["lines"][0]["contract_line_id"],
    }


async def test_fixed_rate_reaches_the_dataverse_actuals_as_2187_50_usd(
    finance: Finance, dataverse: DataverseUnderTest, bridge: Any
) -> None:
    dataverse.start_consumer()
    year = date.today().year  # Dataverse books actuals on today's date
    response = await finance.call(
        "PUT", "/legal-entities/USMF", {"accounting_currency": "USD", "fiscal_year": year}
    )
    assert response.status_code == 200, response.text
    response = await finance.call(
        "POST",
        "/legal-entities/USMF/exchange-rates",
        {"from_currency": "GBP", "to_currency": "USD", "valid_from": "2000-01-01", "rate": "1.30"},
    )
    assert response.status_code == 200, response.text

    setup = await _gbp_contract(dataverse)
    # The accountant fixes the rate before Finance has seen the contract.
    response = await finance.call(
        "PUT",
        f"/contracts/{setup['contract_id']}/fixed-exchange-rate",
        {"legal_entity": "USMF", "contract_currency": "GBP", "rate": "1.25"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["contract_seen"] is False

    client = dataverse.client
    entry = ok(
        await client.post(
            "/entries/approve",
            json={
                "transaction_class": "time",
                "project_id": setup["project_id"],
                "contract_line_id": setup["line_id"],
                "quantity": "7",
                "document_date": date.today().isoformat(),
                "resource": "Alice",
            },
        ),
        201,
    )
    unbilled = [a["actual_id"] for a in entry["actuals"] if a["transaction_type"] != "cost"]
    ok(await client.post("/actuals/ready", json={"actual_ids": unbilled}))
    draft = ok(await client.post(f"/contracts/{setup['contract_id']}/invoices", json={}), 201)
    invoice_id = draft["invoice_id"]
    confirmed = ok(await client.post(f"/invoices/{invoice_id}/confirm"))
    assert confirmed["total_amount"] == "1750.00"

    # Finance: the journal (cost, unbilled sales), then the proposal's line, then the invoice.
    async def staged(transaction_type: str, count: int) -> bool:
        rows = await finance.get("/staging", transaction_type=transaction_type)
        return len(rows) >= count

    await wait_for(lambda: staged("unbilled_sales", 1), 60, "unbilled sales staged in Finance")
    await wait_for(lambda: staged("cost", 1), 60, "cost staged in Finance")
    await finance.call("POST", "/import", {})
    posted = await finance.call("POST", "/journals/post", {})
    assert posted.status_code == 200 and posted.json(), posted.text

    async def proposal_has_lines() -> bool:
        await finance.call("POST", "/import", {"proposal_id": invoice_id})
        response = await finance.call("GET", f"/proposals/{invoice_id}")
        return response.status_code == 200 and response.json()["status"] == "lines_imported"

    await wait_for(proposal_has_lines, 60, "the proposal to get its line")
    response = await finance.call("POST", f"/proposals/{invoice_id}/post", {}, finance.clerk)
    assert response.status_code == 200, response.text
    invoice = response.json()
    assert (invoice["net_amount"], invoice["currency"]) == ("1750.00", "GBP")
    assert (invoice["total_accounting_amount"], invoice["accounting_currency"]) == (
        "2187.50",
        "USD",
    )
    assert invoice["exchange_rate_source"] == "contract fixed rate"
    voucher = await finance.get(f"/vouchers/{invoice['voucher']}")
    assert {e["account"]: e["amount"] for e in voucher["entries"]}[
        "130100 Accounts receivable"
    ] == "2187.50"

    # Dataverse: the billed and unbilled actuals carry Finance's accounting detail.
    async def stamped() -> list[dict[str, Any]]:
        response = await client.get("/actuals", params={"contract_id": setup["contract_id"]})
        actuals: list[dict[str, Any]] = ok(response)
        return [a for a in actuals if a["voucher"] is not None]

    async def billed_stamped() -> bool:
        return any(a["transaction_type"] == "billed_sales" for a in await stamped())

    await wait_for(billed_stamped, 60, "the billed actual stamped in Dataverse")
    by_type = {a["transaction_type"]: a for a in await stamped()}
    billed = by_type["billed_sales"]
    assert billed["voucher"] == invoice["voucher"]
    assert Decimal(billed["exchange_rate"]) == Decimal("1.25")
    assert Decimal(billed["accounting_currency_amount"]) == Decimal("2187.50")
    assert Decimal(billed["amount"]) == Decimal("1750.00")
    assert billed["billing_status"] == "customer_invoice_posted"
    accrued = by_type["unbilled_sales"]
    assert Decimal(accrued["exchange_rate"]) == Decimal("1.25")
    assert Decimal(accrued["accounting_currency_amount"]) == Decimal("2187.50")
