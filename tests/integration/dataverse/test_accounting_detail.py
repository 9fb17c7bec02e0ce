"""The consumer of `dv-actuals-accounting`: stamps actuals, idempotent, refuses the unknown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from schemas.envelope import Envelope
from schemas.mapped_events import ActualAccountingRecord, ActualAccountingRecords, BridgeRecord
from schemas.topics import Topic
from services.common.db import TRANSIENT_DATABASE_ERRORS
from services.common.kafka import make_producer
from services.dataverse.handlers import apply_accounting_detail
from tests.integration.dataverse.project_setup import contracted_project, draft_invoice, ok
from tests.integration.dataverse.service_under_test import (
    DataverseUnderTest,
    bearer,
    read_topic,
)
from tests.waiting import holds, wait_for

pytestmark = pytest.mark.integration

ACTUALS_MAP = "Project Operations integration actuals (msdyn_actuals)"


@pytest.fixture
async def bridge_side(dataverse: DataverseUnderTest) -> AsyncIterator[AIOKafkaProducer]:
    """A plain producer standing in for the bridge."""
    producer = make_producer(dataverse.settings, "bridge-stand-in")
    await producer.start()
    yield producer
    await producer.stop()


def accounting_event(
    actual_id: str, invoice_id: str | None, record_id: UUID, voucher: str = "GJ-000123"
) -> Envelope[ActualAccountingRecords]:
    """What the bridge sends for one posted actual (a run of one); re-sends keep `record_id`."""
    detail = ActualAccountingRecord(
        msdyn_actualid=UUID(actual_id),
        msdyn_externalreference=voucher,
        msdyn_externalreferencedate=date(2026, 4, 2),
        msdyn_exchangerate=Decimal("1.1"),
        msdyn_amountaccountingcurrency=Decimal("1760.00"),
        msdyn_salestaxamount=Decimal("0"),
    )
    return Envelope[ActualAccountingRecords](
        event_type="actual.accounting",
        source=ACTUALS_MAP,
        correlation_id=invoice_id,
        payload=ActualAccountingRecords(
            records=[BridgeRecord[ActualAccountingRecord](record_id=record_id, record=detail)]
        ),
    )


async def send(
    producer: AIOKafkaProducer, dataverse: DataverseUnderTest, event: Envelope[Any]
) -> None:
    """Keyed as the bridge keys it: the posted invoice, else the journal's actual."""
    [item] = event.payload.records
    await producer.send_and_wait(
        dataverse.topic(Topic.DV_ACTUALS_ACCOUNTING),
        event.model_dump_json().encode(),
        key=(event.correlation_id or str(item.record.msdyn_actualid)).encode(),
    )


async def test_accounting_detail_stamps_actuals_and_is_idempotent_under_redelivery(
    dataverse: DataverseUnderTest, bridge_side: AIOKafkaProducer
) -> None:
    client = dataverse.client
    setup = await contracted_project(client)
    milestone = ok(
        await client.post(
            f"/contracts/{setup.contract_id}/milestones",
            json={
                "contract_line_id": setup.fixed_line_id,
                "name": "Go-live",
                "amount": 5000,
                "milestone_date": "2026-03-15",
            },
        ),
        201,
    )
    ok(await client.post(f"/milestones/{milestone['milestone_id']}/ready"))
    invoice_id = (await draft_invoice(client, setup))["invoice_id"]
    ok(await client.post(f"/invoices/{invoice_id}/confirm"))
    billed = ok(
        await client.get(
            "/actuals", params={"invoice_id": invoice_id, "transaction_type": "billed_sales"}
        )
    )
    hours = next(a for a in billed if a["transaction_class"] == "time")
    go_live = next(a for a in billed if a["transaction_class"] == "milestone")
    consumer = dataverse.start_consumer()

    record_id = uuid4()
    first = accounting_event(hours["actual_id"], invoice_id, record_id)
    await send(bridge_side, dataverse, first)
    await send(bridge_side, dataverse, first)  # redelivered: same event id
    resent = accounting_event(hours["actual_id"], invoice_id, record_id)  # re-driven: new id
    await send(bridge_side, dataverse, resent)
    milestone_record = uuid4()
    await send(
        bridge_side,
        dataverse,
        accounting_event(go_live["actual_id"], invoice_id, milestone_record, voucher="GJ-000124"),
    )
    await wait_for(
        holds(lambda: consumer.stats.applied >= 3 and consumer.stats.duplicates >= 1),
        what="3 applied, 1 duplicate",
    )

    stamped = ok(await client.get(f"/actuals/{hours['actual_id']}"))
    assert stamped["billing_status"] == "customer_invoice_posted"
    assert stamped["voucher"] == "GJ-000123"
    assert stamped["voucher_date"] == "2026-04-02"
    assert stamped["exchange_rate"] == "1.1"
    assert stamped["accounting_currency_amount"] == "1760.00"
    assert stamped["tax_amount"] == "0"
    # Nothing but the accounting detail and billing status changed.
    assert {k: v for k, v in stamped.items() if not _accounting(k)} == {
        k: v for k, v in hours.items() if not _accounting(k)
    }
    posted = ok(await client.get(f"/milestones/{milestone['milestone_id']}"))
    assert posted["invoice_status"] == "customer_invoice_posted"
    assert consumer.stats.parked == 0

    await dataverse.outbox_drained()
    # The outbox is drained: every receipt message is on the topic, and all of them are read.
    messages = await read_topic(dataverse.settings, dataverse.topic(Topic.SYNC_RECEIPTS), 1)
    receipts = [answer for m in messages for answer in m.payload["receipts"]]
    assert len(receipts) == 3  # the duplicate is not answered twice, the re-send is
    answers = sorted((r["record_key"], r["source_event_id"], r["outcome"]) for r in receipts)
    assert answers == sorted(
        [
            (hours["actual_id"], str(record_id), "applied"),
            (hours["actual_id"], str(record_id), "applied"),
            (go_live["actual_id"], str(milestone_record), "applied"),
        ]
    )
    assert all(r["map_name"] == ACTUALS_MAP for r in receipts)
    assert all(r["target"] == "dataverse" for r in receipts)
    assert all(m.value["correlation_id"] == invoice_id for m in messages)


def _accounting(field: str) -> bool:
    return field in {
        "billing_status",
        "voucher",
        "voucher_date",
        "exchange_rate",
        "accounting_currency_amount",
        "tax_amount",
        "accounting_updated_at",
    }


async def test_accounting_detail_for_an_unknown_actual_is_refused_kept_and_answered(
    dataverse: DataverseUnderTest, bridge_side: AIOKafkaProducer
) -> None:
    consumer = dataverse.start_consumer()
    unknown = str(uuid4())
    record_id = uuid4()
    await send(bridge_side, dataverse, accounting_event(unknown, None, record_id))
    await wait_for(holds(lambda: consumer.stats.applied >= 1), what="the refusal")

    refusals = ok(
        await dataverse.client.get(
            "/accounting-refusals",
            headers=bearer(dataverse.settings.token_administrator),
        )
    )
    assert [(r["actual_id"], r["source_event_id"]) for r in refusals] == [(unknown, str(record_id))]
    assert "unknown actual" in refusals[0]["reason"]
    assert refusals[0]["record"]["msdyn_externalreference"] == "GJ-000123"
    await dataverse.outbox_drained()
    [message] = await read_topic(dataverse.settings, dataverse.topic(Topic.SYNC_RECEIPTS), 1)
    # No invoice to key it by: the receipt is keyed by its record (the actual).
    assert message.key == unknown
    [receipt] = message.payload["receipts"]
    assert (receipt["record_key"], receipt["outcome"]) == (unknown, "rejected")
    assert "unknown actual" in receipt["reason"]
    assert consumer.stats.parked == 0


async def test_stamping_an_actual_a_confirmation_holds_backs_off_instead_of_deadlocking(
    dataverse: DataverseUnderTest,
) -> None:
    """Regression: a consumer batch waiting for an actual a long confirmation held, while
    holding actuals it had stamped, deadlocked with it (10,000-line invoice). The handler now
    fails at once with a transient error; the batch is retried, never parked."""
    setup = await contracted_project(dataverse.client)
    invoice_id = (await draft_invoice(dataverse.client, setup))["invoice_id"]
    ok(await dataverse.client.post(f"/invoices/{invoice_id}/confirm"))
    billed = ok(
        await dataverse.client.get(
            "/actuals", params={"invoice_id": invoice_id, "transaction_type": "billed_sales"}
        )
    )
    actual_id = billed[0]["actual_id"]
    event = accounting_event(actual_id, invoice_id, uuid4())
    async with dataverse.pool.acquire() as holder, dataverse.pool.acquire() as consumer:
        confirmation = holder.transaction()
        await confirmation.start()
        await holder.execute(
            "SELECT 1 FROM msdyn_actual WHERE actual_id = $1 FOR UPDATE", UUID(actual_id)
        )
        with pytest.raises(asyncpg.LockNotAvailableError) as raised:
            async with consumer.transaction():
                await apply_accounting_detail(consumer, dataverse.settings, event)
        assert isinstance(raised.value, TRANSIENT_DATABASE_ERRORS)
        await confirmation.commit()
        async with consumer.transaction():
            await apply_accounting_detail(consumer, dataverse.settings, event)
    stamped = ok(await dataverse.client.get(f"/actuals/{actual_id}"))
    assert stamped["voucher"] == "GJ-000123"
