"""Mapped records in, journal and proposal lines by import, postings out with accounting detail."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest

from schemas.topics import Topic
from services.finance.domain import NOT_POSTED_YET, ONE_WAY_MESSAGE
from services.finance.importer import import_from_staging
from tests.integration.finance.conftest import (
    Finance,
    actual_record,
    header_record,
    import_worker,
    milestone_record,
    running,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


async def _import(finance: Finance, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = await finance.call("POST", "/import", body or {})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_time_and_material_invoice_from_staging_to_posted_invoice(finance: Finance) -> None:
    await finance.setup_legal_entity()
    invoice_id = uuid4()
    cost = actual_record("Cost", msdyn_amount=Decimal("800.00"), msdyn_price=Decimal("100"))
    unbilled = actual_record("UnbilledSales")
    billed = actual_record(
        "BilledSales", msdyn_invoice=invoice_id, msdyn_unbilledactual=unbilled.msdyn_actualid
    )
    for record in (cost, unbilled):
        await finance.actual(record)
    await finance.header(header_record(invoice_id, expected=1))
    await finance.actual(billed)
    receipts = await finance.wait_receipts(4)
    assert {r["outcome"] for r in receipts} == {"applied"}
    assert {r["record_key"] for r in receipts} == {
        str(cost.msdyn_actualid),
        str(unbilled.msdyn_actualid),
        str(billed.msdyn_actualid),
        str(invoice_id),
    }
    assert {r["map_name"] for r in receipts} == {
        "Project invoice proposal V2 (invoices)",
        "Project Operations integration actuals (msdyn_actuals)",
    }

    # The unbilled sales are not posted yet: the proposal waits and says why.
    summary = await _import(finance)
    assert summary["journal_lines_created"] == 2
    assert summary["waiting"][str(invoice_id)].startswith(NOT_POSTED_YET)
    proposal = await finance.get(f"/proposals/{invoice_id}")
    assert proposal["status"] == "open"
    assert proposal["lines"] == []
    assert proposal["waiting_reason"].startswith(NOT_POSTED_YET)
    assert proposal["expected_billed_lines"] == 1
    (journal,) = await finance.get("/journals", status="draft")
    detail = await finance.get(f"/journals/{journal['journal_id']}")
    assert sorted(line["actual_id"] for line in detail["lines"]) == sorted(
        [str(cost.msdyn_actualid), str(unbilled.msdyn_actualid)]
    )

    # The accountant posts the journal: one voucher per line, one journal-posted per actual.
    response = await finance.call("POST", "/journals/post", {})
    assert response.status_code == 200, response.text
    assert [p["journal_id"] for p in response.json()] == [journal["journal_id"]]
    await finance.reader.wait(
        lambda r: len(r.on(Topic.JOURNAL_POSTED, finance.settings)) >= 2, "journal-posted events"
    )
    posted_lines = finance.reader.on(Topic.JOURNAL_POSTED, finance.settings)
    assert {m.key for m in posted_lines} == {str(cost.msdyn_actualid), str(unbilled.msdyn_actualid)}
    for message in posted_lines:
        payload = message.value["payload"]
        assert payload["journal_id"] == journal["journal_id"]
        assert [a["actual_id"] for a in payload["actuals"]] == [message.key]
        assert payload["actuals"][0]["voucher"] == payload["voucher"]
    wip = await finance.get("/ledger", account="WIP – sales value")
    assert [Decimal(e["amount"]) for e in wip] == [Decimal("1600.00")]

    # Now the proposal gets its line, and the clerk posts it.
    summary = await _import(finance, {"proposal_id": str(invoice_id)})
    assert summary["proposals_with_lines"] == [str(invoice_id)]
    again = await _import(finance, {"proposal_id": str(invoice_id)})
    assert again["proposals_with_lines"] == [] and again["waiting"] == {}
    proposal = await finance.get(f"/proposals/{invoice_id}")
    assert proposal["status"] == "lines_imported"
    assert proposal["waiting_reason"] is None
    assert [line["actual_id"] for line in proposal["lines"]] == [str(billed.msdyn_actualid)]

    refused = await finance.call("POST", f"/proposals/{invoice_id}/post", {})
    assert refused.status_code == 403, "the accountant may not post a proposal"
    response = await finance.call("POST", f"/proposals/{invoice_id}/post", {}, finance.clerk)
    assert response.status_code == 200, response.text
    invoice = response.json()
    assert invoice["invoice_number"] == "USPM-CIV-000001"
    assert invoice["total_amount"] == "1760.00"
    assert invoice["proposal_id"] == str(invoice_id)
    voucher = await finance.get(f"/vouchers/{invoice['voucher']}")
    assert Decimal(voucher["balance"]) == 0
    accounts = {e["account"]: Decimal(e["amount"]) for e in voucher["entries"]}
    assert accounts["130100 Accounts receivable"] == Decimal("1760.00")
    assert accounts["WIP – sales value"] == Decimal("-1600.00")

    await finance.reader.wait(
        lambda r: len(r.on(Topic.INVOICE_POSTED, finance.settings)) >= 1, "invoice-posted"
    )
    (message,) = finance.reader.on(Topic.INVOICE_POSTED, finance.settings)
    assert message.key == str(invoice_id)
    assert message.value["correlation_id"] == str(invoice_id)
    payload = message.value["payload"]
    assert payload["customer_invoice_number"] == "USPM-CIV-000001"
    assert Decimal(payload["total_amount"]) == Decimal("1760.00")
    (detail,) = payload["actuals"]
    assert detail["actual_id"] == str(billed.msdyn_actualid)
    assert detail["voucher"] == invoice["voucher"]
    assert Decimal(detail["accounting_currency_amount"]) == Decimal("1600.00")
    assert Decimal(detail["tax_amount"]) == Decimal("160.00")
    assert len(await finance.get("/staging", transaction_type="cost")) == 1
    for transaction_type in ("cost", "billed_sales"):
        counted = await finance.get("/staging/count", transaction_type=transaction_type)
        assert counted["count"] == 1
        assert counted["last_received_at"] is not None
    nothing = await finance.get("/staging/count", legal_entity="NONE")
    assert nothing == {"count": 0, "last_received_at": None}
    (row,) = await finance.get("/staging", invoice_id=str(invoice_id))
    assert row["voucher"] == invoice["voucher"]
    assert row["imported"] is True

    again = await finance.call("POST", f"/proposals/{invoice_id}/post", {}, finance.clerk)
    assert again.status_code == 409
    assert "already posted" in again.json()["detail"]
    assert await finance.count("customer_invoice") == 1


async def test_an_open_proposal_counts_down_its_billed_rows_then_gets_its_lines(
    finance: Finance,
) -> None:
    # The import's one read of every open proposal: the count of staged billed rows is its
    # waiting reason, written only when it changes; all rows there, the proposal is imported.
    await finance.setup_legal_entity()
    invoice_id = uuid4()
    amounts = ("1000.00", "600.00", "400.00")
    milestones = [milestone_record(invoice_id, amount) for amount in amounts]
    await finance.header(header_record(invoice_id, expected=3, ProposalTotal=Decimal("2000.00")))
    await finance.actual(milestones[0])
    await finance.wait_receipts(2)

    async def stored() -> tuple[str, Any]:
        async with finance.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT waiting_reason, updated_at FROM project_invoice_proposal "
                "WHERE proposal_id = $1",
                invoice_id,
            )
        return row["waiting_reason"], row["updated_at"]

    summary = await _import(finance)
    assert summary["waiting"] == {str(invoice_id): "waiting for 2 of 3 billed sales actuals"}
    reason, updated_at = await stored()
    assert reason == "waiting for 2 of 3 billed sales actuals"
    await _import(finance)
    assert await stored() == (reason, updated_at), "an unchanged reason is not written again"

    await finance.actual(milestones[1])
    await finance.wait_receipts(3)
    await _import(finance)
    assert (await stored())[0] == "waiting for 1 of 3 billed sales actuals"

    await finance.actual(milestones[2])
    await finance.wait_receipts(4)
    summary = await _import(finance)
    assert summary["proposals_with_lines"] == [str(invoice_id)]
    assert summary["waiting"] == {}
    proposal = await finance.get(f"/proposals/{invoice_id}")
    assert proposal["status"] == "lines_imported"
    assert proposal["waiting_reason"] is None
    assert sorted(Decimal(line["amount"]) for line in proposal["lines"]) == sorted(
        Decimal(a) for a in amounts
    )


async def test_billed_rows_before_their_header_wait_and_the_periodic_import_takes_them(
    finance: Finance,
) -> None:
    await finance.setup_legal_entity()
    invoice_id = uuid4()
    milestones = [milestone_record(invoice_id, "1000.00"), milestone_record(invoice_id, "600.00")]
    for record in milestones:
        await finance.actual(record)
    await finance.wait_receipts(2)
    summary = await _import(finance)
    assert set(summary["rows_not_imported"].values()) == {
        f"no proposal header {invoice_id} received yet"
    }
    one = await _import(finance, {"proposal_id": str(invoice_id)})
    assert one["waiting"] == {str(invoice_id): f"no proposal header {invoice_id} received yet"}
    rows = await finance.get("/staging", imported=False)
    assert {r["reason"] for r in rows} == {f"no proposal header {invoice_id} received yet"}

    async with running(import_worker(finance)):
        await finance.header(header_record(invoice_id, expected=2))

        async def has_lines() -> bool:
            response = await finance.call("GET", f"/proposals/{invoice_id}")
            return response.status_code == 200 and len(response.json()["lines"]) == 2

        await wait_for(has_lines, what="the periodic import to give the proposal its lines")
    assert await finance.get("/staging", imported=False) == []

    # Closed period: posting is refused and nothing is written, not even a number.
    closed = await finance.call(
        "PUT", "/legal-entities/USPM/fiscal-periods/2026-11", {"closed": True}
    )
    assert closed.status_code == 200, closed.text
    refused = await finance.call("POST", f"/proposals/{invoice_id}/post", {}, finance.clerk)
    assert refused.status_code == 409
    assert "2026-11 is closed" in refused.json()["detail"]
    assert await finance.count("voucher") == 0
    # With "move to the next open period" the posting lands on 2026-12-01.
    moved = await finance.call(
        "PUT",
        "/legal-entities/USPM",
        {"accounting_currency": "USD", "move_to_next_open_period": True},
    )
    assert moved.status_code == 200, moved.text
    response = await finance.call("POST", f"/proposals/{invoice_id}/post", {}, finance.clerk)
    assert response.status_code == 200, response.text
    assert response.json()["invoice_date"] == "2026-12-01"
    assert response.json()["invoice_number"] == "USPM-CIV-000001"
    assert response.json()["voucher"] == "USPM-VOU-000001"


async def test_missing_exchange_rate_keeps_rows_out_with_the_reason_until_it_is_set(
    finance: Finance,
) -> None:
    await finance.setup_legal_entity()
    invoice_id = uuid4()
    cost = actual_record("Cost", msdyn_transactioncurrency="EUR", msdyn_amount=Decimal("800.00"))
    billed = milestone_record(invoice_id, "1000.00", msdyn_transactioncurrency="EUR")
    await finance.actual(cost)
    await finance.actual(billed)
    await finance.header(header_record(invoice_id, expected=1, CurrencyCode="EUR"))
    await finance.wait_receipts(3)

    reason = "no exchange rate for EUR→USD on 2026-11-02"
    summary = await _import(finance)
    assert summary["journal_lines_created"] == 0
    assert summary["waiting"] == {str(invoice_id): reason}
    assert summary["rows_not_imported"] == {
        str(cost.msdyn_actualid): reason,
        str(billed.msdyn_actualid): reason,
    }
    proposal = await finance.get(f"/proposals/{invoice_id}")
    assert proposal["waiting_reason"] == reason
    assert {r["reason"] for r in await finance.get("/staging", imported=False)} == {reason}

    response = await finance.call(
        "POST",
        "/legal-entities/USPM/exchange-rates",
        {"from_currency": "EUR", "to_currency": "USD", "valid_from": "2026-11-01", "rate": "1.1"},
    )
    assert response.status_code == 200, response.text
    summary = await _import(finance)
    assert summary["journal_lines_created"] == 1
    assert summary["proposals_with_lines"] == [str(invoice_id)]
    assert summary["rows_not_imported"] == {}
    (line,) = (await finance.get(f"/journals/{summary['journals_created'][0]}"))["lines"]
    assert Decimal(line["exchange_rate"]) == Decimal("1.1")


async def test_concurrent_import_runs_never_import_a_staged_row_twice(finance: Finance) -> None:
    await finance.setup_legal_entity()
    n = 60
    for _ in range(n):
        await finance.actual(actual_record("Cost", msdyn_amount=Decimal("100.00")))
    await finance.wait_receipts(n)
    summaries = await asyncio.gather(
        *(import_from_staging(finance.pool, finance.settings) for _ in range(4))
    )
    assert sum(s.journal_lines_created for s in summaries) == n
    assert await finance.count("integration_journal_line") == n
    assert await finance.get("/staging", imported=False) == []


async def test_direct_create_delete_or_rekey_of_a_proposal_is_refused_and_changes_nothing(
    finance: Finance,
) -> None:
    await finance.setup_legal_entity()
    invoice_id = uuid4()
    await finance.header(header_record(invoice_id, expected=1))
    await finance.wait_receipts(1)
    before = await finance.get(f"/proposals/{invoice_id}")

    created = await finance.call("POST", "/proposals", {"proposal_id": str(uuid4())})
    assert created.status_code == 405
    assert ONE_WAY_MESSAGE in created.json()["detail"]
    deleted = await finance.call("DELETE", f"/proposals/{invoice_id}")
    assert deleted.status_code == 405
    assert ONE_WAY_MESSAGE in deleted.json()["detail"]
    rekeyed = await finance.call("PATCH", f"/proposals/{invoice_id}", {"proposal_id": str(uuid4())})
    assert rekeyed.status_code == 409
    assert ONE_WAY_MESSAGE in rekeyed.json()["detail"]
    put_new = await finance.call("PUT", f"/proposals/{uuid4()}", {"sales_tax_group": "X"})
    assert put_new.status_code == 405
    assert ONE_WAY_MESSAGE in put_new.json()["detail"]
    not_allowed = await finance.call("PATCH", f"/proposals/{invoice_id}", {"ProposalTotal": "1"})
    assert not_allowed.status_code == 422
    assert "ProposalTotal" in not_allowed.text
    assert (await finance.call("DELETE", f"/proposals/{invoice_id}", headers={})).status_code == 401

    assert await finance.get(f"/proposals/{invoice_id}") == before
    assert await finance.count("project_invoice_proposal") == 1
    assert await finance.count("dwsim_outbox WHERE topic LIKE '%proposal-header-changed'") == 0

    # An allowed header edit stays in Finance and is published for the bridge to refuse.
    edited = await finance.call("PATCH", f"/proposals/{invoice_id}", {"sales_tax_group": "EXEMPT"})
    assert edited.status_code == 200, edited.text
    assert edited.json()["sales_tax_group"] == "EXEMPT"
    await finance.reader.wait(
        lambda r: len(r.on(Topic.PROPOSAL_HEADER_CHANGED, finance.settings)) == 1,
        "proposal-header-changed",
    )
    (change,) = finance.reader.on(Topic.PROPOSAL_HEADER_CHANGED, finance.settings)
    assert change.key == str(invoice_id)
    assert change.value["payload"]["changed_fields"] == {"sales_tax_group": "EXEMPT"}


async def test_setup_validation_names_the_field_and_writes_nothing(finance: Finance) -> None:
    bad_currency = await finance.call("PUT", "/legal-entities/USPM", {"accounting_currency": "usd"})
    assert bad_currency.status_code == 422
    assert "accounting_currency" in bad_currency.text
    bad_type = await finance.call(
        "PUT",
        "/legal-entities/USPM",
        {"accounting_currency": "USD", "line_properties": {"billable": "Chargeable"}},
    )
    assert bad_type.status_code == 422
    assert "line_properties" in bad_type.text
    bad_period = await finance.call(
        "PUT", "/legal-entities/USPM/fiscal-periods/2026-13", {"closed": True}
    )
    assert bad_period.status_code == 422
    assert await finance.get("/legal-entities") == []
    clerk = await finance.call(
        "PUT", "/legal-entities/USPM", {"accounting_currency": "USD"}, finance.clerk
    )
    assert clerk.status_code == 403
    unknown = await finance.call("GET", "/proposals/" + str(uuid4()))
    assert unknown.status_code == 404
