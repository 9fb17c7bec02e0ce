"""Domain rule 5 through Finance's API: a project contract's fixed exchange rate, set by the
accountant, wins over the rate table in the import, the journal and invoice postings and the
accounting detail sent back; the posted documents say which rate applied and why."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest

from schemas.topics import Topic
from tests.integration.finance.conftest import CONTRACT, Finance, actual_record, header_record

pytestmark = pytest.mark.integration

RATE_PATH = f"/contracts/{CONTRACT}/fixed-exchange-rate"
FIXED_BODY = {"legal_entity": "USMF", "contract_currency": "GBP", "rate": "1.25"}


async def _usmf_with_table_rate(finance: Finance, rate: str = "1.30") -> None:
    await finance.setup_legal_entity("USMF", "USD")
    response = await finance.call(
        "POST",
        "/legal-entities/USMF/exchange-rates",
        {"from_currency": "GBP", "to_currency": "USD", "valid_from": "2026-01-01", "rate": rate},
    )
    assert response.status_code == 200, response.text


def _gbp(transaction_type: str, **changes: Any) -> Any:
    """7 h × 250 GBP on the contract, in USMF."""
    values: dict[str, Any] = {
        "msdyn_legalentity": "USMF",
        "msdyn_transactioncurrency": "GBP",
        "msdyn_quantity": Decimal("7"),
        "msdyn_price": Decimal("250"),
        "msdyn_amount": Decimal("1750.00"),
    }
    values.update(changes)
    return actual_record(transaction_type, **values)


async def _ok(finance: Finance, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    response = await finance.call(method, path, body, **kw)
    assert response.status_code == 200, response.text
    return response.json()


async def test_7_hours_at_250_gbp_fixed_at_1_25_post_1750_gbp_and_2187_50_usd_not_the_table_1_30(
    finance: Finance,
) -> None:
    await _usmf_with_table_rate(finance)
    # Set before Finance has seen the contract: kept, and applied when its rows arrive.
    fixed = await _ok(finance, "PUT", RATE_PATH, FIXED_BODY)
    assert fixed["rate"] == "1.25"
    assert fixed["accounting_currency"] == "USD"
    assert fixed["contract_seen"] is False
    assert (await finance.get(RATE_PATH))["rate"] == "1.25"

    invoice_id = uuid4()
    unbilled = _gbp("UnbilledSales")
    billed = _gbp(
        "BilledSales", msdyn_invoice=invoice_id, msdyn_unbilledactual=unbilled.msdyn_actualid
    )
    await finance.actual(unbilled)
    await finance.header(
        header_record(
            invoice_id,
            expected=1,
            DataAreaId="USMF",
            CurrencyCode="GBP",
            ProposalTotal=Decimal("1750.00"),
            SalesTaxAmount=Decimal("0.00"),
        )
    )
    await finance.actual(billed)
    receipts = await finance.wait_receipts(3)
    assert {r["outcome"] for r in receipts} == {"applied"}

    # The import fixes the contract's rate on the journal line, and says why.
    await _ok(finance, "POST", "/import", {})
    (journal,) = await finance.get("/journals", status="draft")
    (line,) = (await finance.get(f"/journals/{journal['journal_id']}"))["lines"]
    assert Decimal(line["exchange_rate"]) == Decimal("1.25")
    assert line["exchange_rate_source"] == "contract fixed rate"
    await _ok(finance, "POST", "/journals/post", {})
    (unbilled_row,) = await finance.get("/staging", transaction_type="unbilled_sales")
    assert Decimal(unbilled_row["accounting_currency_amount"]) == Decimal("2187.50")
    assert unbilled_row["exchange_rate_source"] == "contract fixed rate"

    summary = await _ok(finance, "POST", "/import", {"proposal_id": str(invoice_id)})
    assert summary["proposals_with_lines"] == [str(invoice_id)]
    invoice = await _ok(finance, "POST", f"/proposals/{invoice_id}/post", {}, headers=finance.clerk)
    assert invoice["currency"] == "GBP"
    assert invoice["net_amount"] == "1750.00"
    assert invoice["total_amount"] == "1750.00"
    assert invoice["accounting_currency"] == "USD"
    assert Decimal(invoice["exchange_rate"]) == Decimal("1.25")
    assert invoice["total_accounting_amount"] == "2187.50"
    assert invoice["exchange_rate_source"] == "contract fixed rate"

    voucher = await finance.get(f"/vouchers/{invoice['voucher']}")
    entries = {e["account"]: e["amount"] for e in voucher["entries"]}
    assert entries["130100 Accounts receivable"] == "2187.50"
    assert entries["Revenue – project"] == "-2187.50"
    assert entries["WIP – sales value"] == "-2187.50"
    assert Decimal(voucher["balance"]) == 0

    (billed_row,) = await finance.get("/staging", invoice_id=str(invoice_id))
    assert Decimal(billed_row["exchange_rate"]) == Decimal("1.25")
    assert billed_row["accounting_currency_amount"] == "2187.50"
    assert billed_row["exchange_rate_source"] == "contract fixed rate"

    # The accounting detail Finance sends back to Dataverse carries the fixed rate.
    await finance.reader.wait(
        lambda r: len(r.on(Topic.INVOICE_POSTED, finance.settings)) >= 1, "invoice-posted"
    )
    (message,) = finance.reader.on(Topic.INVOICE_POSTED, finance.settings)
    payload = message.value["payload"]
    assert Decimal(payload["exchange_rate"]) == Decimal("1.25")
    assert Decimal(payload["total_accounting_amount"]) == Decimal("2187.50")
    (detail,) = payload["actuals"]
    assert detail["actual_id"] == str(billed.msdyn_actualid)
    assert Decimal(detail["exchange_rate"]) == Decimal("1.25")
    assert Decimal(detail["accounting_currency_amount"]) == Decimal("2187.50")
    journal_messages = finance.reader.on(Topic.JOURNAL_POSTED, finance.settings)
    (journal_detail,) = [a for m in journal_messages for a in m.value["payload"]["actuals"]]
    assert Decimal(journal_detail["accounting_currency_amount"]) == Decimal("2187.50")

    # Finance has now seen the contract.
    assert (await finance.get(RATE_PATH))["contract_seen"] is True


async def test_removing_the_fixed_rate_brings_the_table_back(finance: Finance) -> None:
    await _usmf_with_table_rate(finance)
    await _ok(finance, "PUT", RATE_PATH, FIXED_BODY)
    changed = await _ok(finance, "PUT", RATE_PATH, {**FIXED_BODY, "rate": "1.2"})
    assert changed["rate"] == "1.2"
    response = await finance.call("DELETE", RATE_PATH)
    assert response.status_code == 204, response.text
    assert (await finance.call("GET", RATE_PATH)).status_code == 404
    assert (await finance.call("DELETE", RATE_PATH)).status_code == 404

    await finance.actual(_gbp("UnbilledSales"))
    await finance.wait_receipts(1)
    await _ok(finance, "POST", "/import", {})
    (journal,) = await finance.get("/journals", status="draft")
    (line,) = (await finance.get(f"/journals/{journal['journal_id']}"))["lines"]
    assert Decimal(line["exchange_rate"]) == Decimal("1.30")
    assert line["exchange_rate_source"] == "exchange rate table"


async def test_bad_fixed_rates_are_refused_and_nothing_is_written(finance: Finance) -> None:
    await _usmf_with_table_rate(finance)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({**FIXED_BODY, "rate": "0"}, 422, "rate"),
        ({**FIXED_BODY, "rate": "-1.25"}, 422, "rate"),
        ({**FIXED_BODY, "contract_currency": "gbp"}, 422, "contract_currency"),
        ({"contract_currency": "GBP", "rate": "1.25"}, 422, "legal_entity"),
        ({**FIXED_BODY, "extra": 1}, 422, "extra"),
        ({**FIXED_BODY, "contract_currency": "USD"}, 409, "accounting currency"),
        ({**FIXED_BODY, "legal_entity": "NOPE"}, 409, "unknown legal entity NOPE"),
    ]
    for body, status, named in cases:
        response = await finance.call("PUT", RATE_PATH, body)
        assert response.status_code == status, (body, response.text)
        assert named in response.text, (body, response.text)
    bad_id = await finance.call("PUT", "/contracts/not-a-uuid/fixed-exchange-rate", FIXED_BODY)
    assert bad_id.status_code == 422
    clerk = await finance.call("PUT", RATE_PATH, FIXED_BODY, headers=finance.clerk)
    assert clerk.status_code == 403, "only the project accountant sets a contract's rate"
    assert await finance.count("contract_fixed_exchange_rate") == 0

    # A contract Finance has seen in EUR cannot get a GBP rate.
    await finance.actual(
        _gbp("Cost", msdyn_transactioncurrency="EUR", msdyn_amount=Decimal("700.00"))
    )
    await finance.wait_receipts(1)
    response = await finance.call("PUT", RATE_PATH, FIXED_BODY)
    assert response.status_code == 409, response.text
    assert f"contract {CONTRACT} is in EUR in Finance, not GBP" in response.json()["detail"]
    assert await finance.count("contract_fixed_exchange_rate") == 0
