"""The table maps at work: a confirmed header mapped field by field, skip sync left out, the
one-way rule, invalid input to the DLQ, and a stopped map holding records until it runs."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from schemas.topics import Topic, dlq_name, topic_name
from services.bridge.table_maps import ACTUALS_MAP_NAME, PROPOSAL_MAP_NAME
from services.common.settings import Settings
from tests.integration.bridge.bridge_harness import (
    BridgeProcess,
    FakeTarget,
    Publisher,
    TopicReader,
    actual_created,
    invoice_confirmed,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


async def test_confirmed_header_is_mapped_field_by_field_and_synced_on_receipt(
    settings: Settings, bridge: BridgeProcess
) -> None:
    invoice = invoice_confirmed(is_corrective=False)
    async with Publisher(settings) as dataverse:
        await dataverse.confirm(invoice)
    async with TopicReader(settings, Topic.FO_INVOICE_PROPOSALS) as finance:
        [message] = await finance.until(lambda ms: len(ms) >= 1, what="the proposal header")
    envelope = message.value
    assert message.key == str(invoice.invoice_id)
    assert envelope["source"] == PROPOSAL_MAP_NAME
    assert envelope["event_type"] == "proposal.header"
    assert envelope["correlation_id"] == str(invoice.invoice_id)
    header = envelope["payload"]
    assert header == {
        "ProposalId": str(invoice.invoice_id),
        "DataAreaId": "USPM",
        "InvoiceAccount": str(invoice.customer_id),
        "ContractId": str(invoice.contract_id),
        "CurrencyCode": "USD",
        "InvoiceDate": "2026-11-30",
        "ProposalTotal": "1600.00",
        "SalesTaxAmount": "160.00",
        "PaymentTerms": "Net30",
        "InvoiceAddress": {
            "street": "1 Main St",
            "city": "Seattle",
            "postal_code": None,
            "country": "US",
        },
        "ExpectedBilledLines": 2,
        "IsCorrective": False,
        "CorrectedProposalId": None,
    }
    record_id = envelope["causation_id"]
    [record] = await bridge.get("/records", invoice_id=str(invoice.invoice_id))
    assert record["record_id"] == record_id
    assert record["status"] == "pending"
    assert record["attempts"] == 1
    async with FakeTarget(settings):

        async def synced() -> bool:
            return (await bridge.get(f"/records/{record_id}"))["status"] == "synced"

        await wait_for(synced, what="the header to be synced")


async def test_skip_sync_actuals_never_reach_staging_and_are_counted(
    settings: Settings, bridge: BridgeProcess
) -> None:
    invoice = invoice_confirmed()
    kept = [actual_created(invoice_id=invoice.invoice_id) for _ in range(2)]
    skipped = actual_created(
        invoice_id=invoice.invoice_id,
        transaction_type="unbilled_sales",
        quantity=Decimal("-8"),
        amount=Decimal("-1600"),
        skip_sync=True,
    )
    # Same key, one partition: the marker after the skip-sync actual proves it was processed.
    marker = actual_created(invoice_id=invoice.invoice_id)
    async with Publisher(settings) as dataverse:
        for actual in (kept[0], skipped, kept[1], marker):
            await dataverse.actual(actual)
    async with TopicReader(settings, Topic.FO_ACTUALS_STAGING) as finance:
        staged = await finance.until(lambda ms: len(ms) >= 3, what="three staging rows")
    ids = [m.value["payload"]["msdyn_actualid"] for m in staged]
    assert ids == [str(kept[0].actual_id), str(kept[1].actual_id), str(marker.actual_id)]
    assert all(m.key == str(invoice.invoice_id) for m in staged)
    assert staged[0].value["payload"]["msdyn_transactiontype"] == "BilledSales"
    assert staged[0].value["payload"]["msdyn_billingtype"] == "Chargeable"
    stats = await bridge.get("/stats")
    assert stats[ACTUALS_MAP_NAME]["filtered"] == 1
    assert stats[ACTUALS_MAP_NAME]["forwarded"] == 3
    # Counted per invoice and reason, not stored: the invoice's records are the three sent.
    [filtered] = await bridge.get("/filtered", invoice_id=str(invoice.invoice_id))
    assert (filtered["map_name"], filtered["reason"], filtered["source_rows"]) == (
        ACTUALS_MAP_NAME,
        "skip sync",
        1,
    )
    records = await bridge.get("/records", invoice_id=str(invoice.invoice_id))
    assert str(skipped.actual_id) not in {r["record_key"] for r in records}
    assert await bridge.get("/records", status="filtered") == []


async def test_finance_side_header_change_is_refused_and_logged(
    settings: Settings, bridge: BridgeProcess
) -> None:
    from schemas.finance_events import ProposalHeaderChanged

    invoice = invoice_confirmed()
    change = ProposalHeaderChanged(
        invoice_id=invoice.invoice_id, legal_entity="USPM", changed_fields={"TaxGroup": "EXEMPT"}
    )
    async with Publisher(settings) as finance:
        await finance.send(
            Topic.PROPOSAL_HEADER_CHANGED,
            str(invoice.invoice_id),
            change,
            "proposal.header_changed",
            "finance",
        )

    async def logged() -> bool:
        return bool(await bridge.get("/activity", map="invoices", kind="one_way_violation"))

    await wait_for(logged, what="the one-way violation in the activity log")
    [entry] = await bridge.get("/activity", map="invoices", kind="one_way_violation")
    assert entry["invoice_id"] == str(invoice.invoice_id)
    assert "finance to dataverse" in entry["message"]
    assert entry["detail"]["changed_fields"] == {"TaxGroup": "EXEMPT"}
    stats = await bridge.get("/stats")
    assert stats[PROPOSAL_MAP_NAME]["one_way_violations"] == 1
    assert await bridge.get("/records") == []  # nothing was forwarded anywhere


async def test_invalid_input_goes_to_dlq_with_reason_and_processing_continues(
    settings: Settings, bridge: BridgeProcess
) -> None:
    good = invoice_confirmed()
    async with Publisher(settings) as dataverse:
        await dataverse.raw(Topic.INVOICE_CONFIRMED, "k", b'{"not": "an envelope"')
        bad = json.loads(invoice_confirmed().model_dump_json())
        bad["currency"] = "DOLLARS"
        await dataverse.raw(
            Topic.INVOICE_CONFIRMED,
            "k",
            json.dumps(
                {
                    "event_type": "invoice.confirmed",
                    "event_id": "8f1b8d55-5c1a-4c43-a1a5-0d1b8e1c2f10",
                    "occurred_at": "2026-11-01T10:00:00Z",
                    "source": "dataverse",
                    "payload": bad,
                }
            ).encode(),
        )
        await dataverse.confirm(good)
    dlq = dlq_name(topic_name(Topic.INVOICE_CONFIRMED, settings.topic_prefix))
    async with TopicReader(settings, dlq) as reader:
        letters = await reader.until(lambda ms: len(ms) >= 2, what="two dead letters")
    reasons = sorted(m.value["reason"] for m in letters)
    assert any("payload.currency" in r for r in reasons), reasons
    assert any("json" in r.lower() for r in reasons), reasons
    assert all(
        m.value["topic"] == topic_name(Topic.INVOICE_CONFIRMED, settings.topic_prefix)
        for m in letters
    )

    async def forwarded() -> bool:
        return len(await bridge.get("/records", invoice_id=str(good.invoice_id))) == 1

    await wait_for(forwarded, what="the good header after the bad ones")


async def test_stopped_map_holds_records_visibly_until_run_explicitly(
    settings: Settings, bridge: BridgeProcess
) -> None:
    response = await bridge.post("/maps/invoices/stop")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "not_running"
    refused = await bridge.post("/maps/invoices/pause")
    assert refused.status_code == 409
    assert (
        "not running" in refused.json()["detail"]
        or "state: not_running" in refused.json()["detail"]
    )
    invoices = [invoice_confirmed() for _ in range(3)]
    async with Publisher(settings) as dataverse:
        for invoice in invoices:
            await dataverse.confirm(invoice)

    async def held() -> bool:
        return len(await bridge.get("/records", status="not_synced")) == 3

    await wait_for(held, what="three held records")
    [record, *_] = await bridge.get("/records", status="not_synced")
    assert record["reason"] == "not synced (map stopped)"
    response = await bridge.post("/maps/invoices/run")
    assert response.status_code == 200, response.text
    assert response.json()["state"] in ("initializing", "running")
    async with TopicReader(settings, Topic.FO_INVOICE_PROPOSALS) as finance:
        delivered = await finance.until(lambda ms: len(ms) >= 3, what="the held headers")
    assert {m.key for m in delivered} == {str(i.invoice_id) for i in invoices}

    async def running() -> bool:
        return (await bridge.get("/maps/invoices"))["state"] == "running"

    await wait_for(running, what="the map to be running after its initial sync")
    kinds = [a["kind"] for a in await bridge.get("/activity", map="invoices")]
    assert "initial_sync_started" in kinds and "initial_sync_finished" in kinds


async def test_posting_accounting_detail_goes_back_to_dataverse_one_record_per_actual(
    settings: Settings, bridge: BridgeProcess
) -> None:
    from uuid import uuid4

    from tests.integration.bridge.bridge_harness import invoice_posted

    invoice_id = uuid4()
    actual_ids = [uuid4(), uuid4()]
    posted = invoice_posted(invoice_id, actual_ids)
    async with Publisher(settings) as finance:
        await finance.send(
            Topic.INVOICE_POSTED, str(invoice_id), posted, "invoice.posted", "finance"
        )
    async with TopicReader(settings, Topic.DV_ACTUALS_ACCOUNTING) as dataverse:
        received = await dataverse.until(lambda ms: len(ms) >= 2, what="two accounting records")
    # One message for the posted invoice's run, keyed by the invoice as invoice-posted is.
    assert [(m.key, m.offset, m.value["run_size"]) for m in received] == [
        (str(invoice_id), received[0].offset, 2)
    ] * 2
    by_actual = {m.value["payload"]["msdyn_actualid"]: m.value for m in received}
    first = by_actual[str(actual_ids[0])]
    assert first["source"] == ACTUALS_MAP_NAME
    assert first["event_type"] == "actual.accounting"
    assert first["correlation_id"] == str(invoice_id)
    assert first["payload"] == {
        "msdyn_actualid": str(actual_ids[0]),
        "msdyn_externalreference": "VOU-0001",
        "msdyn_externalreferencedate": "2026-12-01",
        "msdyn_exchangerate": "1",
        "msdyn_amountaccountingcurrency": "800",
        "msdyn_salestaxamount": "80",
    }
    records = await bridge.get("/records", invoice_id=str(invoice_id))
    assert {r["leg_name"] for r in records} == {"accounting detail to actuals"}
    assert len({r["record_id"] for r in records}) == 2
