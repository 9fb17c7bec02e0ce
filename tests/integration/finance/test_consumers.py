"""The consumers: idempotent by event id and by business key, every delivery answered."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from schemas.topics import Topic
from tests.integration.finance.conftest import Finance, actual_record, header_record
from tests.waiting import holds, wait_for

pytestmark = pytest.mark.integration


async def _snapshot(finance: Finance) -> dict[str, Any]:
    async with finance.pool.acquire() as conn:
        staging = [
            dict(r) for r in await conn.fetch("SELECT * FROM actuals_staging ORDER BY actual_id")
        ]
        # A re-send of an open header refreshes it (updated_at) with the same values.
        proposals = [
            {k: v for k, v in r.items() if k != "updated_at"}
            for r in await conn.fetch("SELECT * FROM project_invoice_proposal ORDER BY proposal_id")
        ]
    return {"staging": staging, "proposals": proposals}


async def test_redelivered_and_resent_records_change_nothing_but_are_answered(
    finance: Finance,
) -> None:
    await finance.setup_legal_entity()
    invoice_id = uuid4()
    header = await finance.header(header_record(invoice_id, expected=1))
    actual = await finance.actual(actual_record("BilledSales", msdyn_invoice=invoice_id))
    await finance.wait_receipts(2)
    before = await _snapshot(finance)

    # The broker redelivers the same events (same event ids): the inbox skips them.
    await finance.send(Topic.FO_INVOICE_PROPOSALS, str(invoice_id), header.envelope)
    await finance.send(Topic.FO_ACTUALS_STAGING, str(invoice_id), actual.envelope)
    await wait_for(holds(lambda: finance.consumer.stats.duplicates >= 2), what="2 duplicates")

    # The bridge re-sends both (receipt late): new event ids, same record ids.
    for topic, original in (
        (Topic.FO_INVOICE_PROPOSALS, header),
        (Topic.FO_ACTUALS_STAGING, actual),
    ):
        await finance.publish(topic, str(invoice_id), original.record, record_id=original.record_id)
    receipts = await finance.wait_receipts(4)
    assert len(receipts) == 4
    assert all(r["outcome"] == "applied" for r in receipts)
    by_record: dict[str, int] = {}
    for r in receipts:
        by_record[r["source_event_id"]] = by_record.get(r["source_event_id"], 0) + 1
    assert by_record == {str(header.record_id): 2, str(actual.record_id): 2}
    assert await _snapshot(finance) == before
    assert await finance.count("actuals_staging") == 1
    assert await finance.count("project_invoice_proposal") == 1


async def test_refused_records_are_kept_with_their_reason_and_a_fixed_setup_lets_them_in(
    finance: Finance,
) -> None:
    response = await finance.call(
        "PUT",
        "/legal-entities/USPM",
        {
            "accounting_currency": "USD",
            "fiscal_year": 2026,
            "line_properties": {"chargeable": "Chargeable", "non_chargeable": "NonChargeable"},
        },
    )
    assert response.status_code == 200, response.text
    invoice_id = uuid4()
    complimentary = await finance.actual(
        actual_record("UnbilledSales", msdyn_billingtype="Complimentary")
    )
    unknown_entity = await finance.actual(actual_record("Cost", msdyn_legalentity="DEMF"))
    header = await finance.header(header_record(invoice_id, expected=1, DataAreaId="DEMF"))
    receipts = await finance.wait_receipts(3)
    reasons = {r["record_key"]: (r["outcome"], r["reason"]) for r in receipts}
    complimentary_id = str(complimentary.record.msdyn_actualid)
    unknown_id = str(unknown_entity.record.msdyn_actualid)
    assert reasons[complimentary_id] == (
        "rejected",
        "no line property mapped for billing type complimentary in legal entity USPM",
    )
    assert reasons[unknown_id] == ("rejected", f"unknown legal entity DEMF on actual {unknown_id}")
    assert reasons[str(invoice_id)] == (
        "rejected",
        f"unknown legal entity DEMF on proposal {invoice_id}",
    )
    invalid = await finance.get("/staging", status="invalid")
    assert {r["actual_id"]: r["reason"] for r in invalid} == {
        complimentary_id: reasons[complimentary_id][1],
        unknown_id: reasons[unknown_id][1],
    }
    (refused,) = await finance.get("/refused-records")
    assert refused["record_key"] == str(invoice_id)
    assert await finance.count("project_invoice_proposal") == 0
    summary = (await finance.call("POST", "/import", {})).json()
    assert summary["journal_lines_created"] == 0

    # Fix the setup; the bridge retries (new event ids, same records): now they apply.
    for entity in ("USPM", "DEMF"):
        fixed = await finance.call(
            "PUT",
            f"/legal-entities/{entity}",
            {
                "accounting_currency": "USD",
                "fiscal_year": 2026,
                "line_properties": {
                    "Chargeable": "Chargeable",
                    "NonChargeable": "NonChargeable",
                    "Complimentary": "NonChargeable",
                },
            },
        )
        assert fixed.status_code == 200, fixed.text
    for original, topic in (
        (complimentary, Topic.FO_ACTUALS_STAGING),
        (unknown_entity, Topic.FO_ACTUALS_STAGING),
        (header, Topic.FO_INVOICE_PROPOSALS),
    ):
        await finance.publish(topic, "k", original.record, record_id=original.record_id)
    receipts = await finance.wait_receipts(6)
    outcomes = sorted(r["outcome"] for r in receipts)
    assert outcomes == ["applied"] * 3 + ["rejected"] * 3
    assert await finance.get("/staging", status="invalid") == []
    assert await finance.get("/refused-records") == []
    assert (await finance.get(f"/proposals/{invoice_id}"))["legal_entity"] == "DEMF"
    summary = (await finance.call("POST", "/import", {})).json()
    assert summary["journal_lines_created"] == 2
