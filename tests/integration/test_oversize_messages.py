"""Regression (issue 18): a message over ~1 MiB on a consumed topic stopped the pipeline for
good. Its dead letter was larger than the dead-letter producer's limit, so the bridge crashed
in a loop and Finance and Dataverse retried the same batch forever; a valid event behind it was
never applied. Now every service stays up, the message is on its `.dlq` with its reason, size,
hash and as much of it as fits, and the events behind it are applied.

The services run as they do in production: Dataverse's and Finance's own consumers (their
subscriptions and handlers) in-process, the bridge as its worker process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import BaseModel

from schemas.dataverse_events import ActualsCreated
from schemas.envelope import Envelope
from schemas.finance_events import ActualAccounting, JournalPosted, ProposalHeaderChanged
from schemas.initial_sync import InitialSyncRequested, SnapshotTable
from schemas.mapped_events import ActualAccountingRecord, ActualAccountingRecords, BridgeRecord
from schemas.receipts import ReceiptOutcome, SyncReceipt, SyncReceipts
from schemas.topics import Topic, dlq_name, topic_name
from services.common.db import create_pool, migrate_service
from services.common.inbox import InboxConsumer
from services.common.settings import PROJECT_ROOT, Settings
from services.dataverse import handlers as dataverse_handlers
from services.finance import handlers as finance_handlers
from tests.integration.bridge.bridge_harness import (
    BridgeProcess,
    actual_created,
    invoice_confirmed,
    invoice_posted,
)
from tests.integration.finance.conftest import (
    PROPOSAL_MAP,
    actual_record,
    header_record,
    staging_event,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

SIZES = [1_500_000, 6_000_000]
ACTUALS_MAP = "Project Operations integration actuals (msdyn_actuals)"


def _event(event_type: str, source: str, payload: BaseModel, **fields: Any) -> Envelope[Any]:
    return Envelope[Any](event_type=event_type, source=source, payload=payload, **fields)


def _accounting_detail() -> Envelope[Any]:
    detail = ActualAccountingRecord(
        msdyn_actualid=uuid4(),
        msdyn_externalreference="GJ-000123",
        msdyn_externalreferencedate=date(2026, 4, 2),
        msdyn_exchangerate=Decimal("1"),
        msdyn_amountaccountingcurrency=Decimal("800.00"),
    )
    records = [BridgeRecord[ActualAccountingRecord](record_id=uuid4(), record=detail)]
    return _event("actual.accounting", ACTUALS_MAP, ActualAccountingRecords(records=records))


def _journal_posted() -> Envelope[Any]:
    line = ActualAccounting(
        actual_id=uuid4(),
        voucher="VOU-0002",
        voucher_date=date(2026, 12, 1),
        exchange_rate=Decimal("1"),
        accounting_currency_amount=Decimal("800"),
    )
    payload = JournalPosted(
        journal_id="JRN-1",
        legal_entity="USPM",
        voucher="VOU-0002",
        posting_date=date(2026, 12, 1),
        actuals=[line],
    )
    return _event("journal.posted", "finance", payload)


def _receipts() -> Envelope[Any]:
    receipt = SyncReceipt(
        map_name=ACTUALS_MAP,
        record_key=str(uuid4()),
        source_event_id=uuid4(),
        outcome=ReceiptOutcome.APPLIED,
        target="finance",
        answers_event_id=uuid4(),
    )
    return _event("sync.receipts", "finance", SyncReceipts(receipts=[receipt]))


# A valid event of each consumed topic that its service applies (answers, refuses or logs as
# its rules say) without parking it: the receipt of an unknown record, a header of a legal
# entity Finance does not know, and so on.
VALID_EVENTS: dict[Topic, Callable[[], Envelope[Any]]] = {
    Topic.DV_ACTUALS_ACCOUNTING: _accounting_detail,
    Topic.FO_INVOICE_PROPOSALS: lambda: _event(
        "proposal.header",
        PROPOSAL_MAP,
        header_record(uuid4(), expected=1),
        causation_id=uuid4(),
    ),
    Topic.FO_ACTUALS_STAGING: lambda: staging_event([(actual_record("Cost"), uuid4())]),
    Topic.INVOICE_CONFIRMED: lambda: _event("invoice.confirmed", "dataverse", invoice_confirmed()),
    Topic.ACTUALS_CREATED: lambda: _event(
        "actuals.created", "dataverse", ActualsCreated(actuals=[actual_created()])
    ),
    Topic.INVOICE_POSTED: lambda: _event(
        "invoice.posted", "finance", invoice_posted(uuid4(), [uuid4()])
    ),
    Topic.JOURNAL_POSTED: _journal_posted,
    Topic.PROPOSAL_HEADER_CHANGED: lambda: _event(
        "proposal.header_changed",
        "finance",
        ProposalHeaderChanged(
            invoice_id=uuid4(), legal_entity="USPM", changed_fields={"SalesTaxGroup": "EXEMPT"}
        ),
    ),
    Topic.SYNC_RECEIPTS: _receipts,
    # A snapshot of a legal entity Dataverse does not hold: applied, nothing to publish.
    Topic.INITIAL_SYNC_REQUESTED: lambda: _event(
        "initial_sync.requested",
        "bridge",
        InitialSyncRequested(
            snapshot_id=uuid4(),
            map_name=PROPOSAL_MAP,
            table=SnapshotTable.CONFIRMED_INVOICES,
            legal_entities=["ZZZZ"],
        ),
    ),
}

# Every topic a service consumes (services/*/handlers.py).
CONSUMED: dict[str, list[Topic]] = {
    "dataverse": [Topic.DV_ACTUALS_ACCOUNTING, Topic.INITIAL_SYNC_REQUESTED],
    "finance": [Topic.FO_INVOICE_PROPOSALS, Topic.FO_ACTUALS_STAGING],
    "bridge": [
        Topic.INVOICE_CONFIRMED,
        Topic.ACTUALS_CREATED,
        Topic.INVOICE_POSTED,
        Topic.JOURNAL_POSTED,
        Topic.PROPOSAL_HEADER_CHANGED,
        Topic.SYNC_RECEIPTS,
    ],
}


def test_every_consumed_topic_is_covered() -> None:
    consumed = {
        s.topic
        for s in dataverse_handlers.subscriptions(Settings())
        + finance_handlers.subscriptions(Settings())
    }
    from services.bridge.handlers import SOURCE_TOPICS

    assert consumed | set(SOURCE_TOPICS) == {t for ts in CONSUMED.values() for t in ts}


# --------------------------------------------------------------------------------------------
# The services


@dataclass
class Running:
    """A service under test: whether it is still up, and its database."""

    alive: Callable[[], bool]
    database: str
    describe: Callable[[], str]


@contextlib.asynccontextmanager
async def running_service(service: str, settings: Settings, logs: Path) -> AsyncIterator[Running]:
    """Dataverse or Finance: the service's consumer in-process, as its __main__ runs it; the
    bridge: its worker process."""
    if service == "bridge":
        bridge = BridgeProcess(settings, logs / "bridge.log").start()
        try:
            await bridge.wait_ready(60)
            yield Running(bridge.alive, "bridge", bridge.tail)
        finally:
            bridge.stop()
        return
    module = dataverse_handlers if service == "dataverse" else finance_handlers
    pool = await create_pool(settings.service_database_url(service))
    migrations = PROJECT_ROOT / "services" / service / "migrations"
    await migrate_service(pool, service, migrations)
    consumer = InboxConsumer(
        pool, settings, f"{settings.topic_prefix}{service}", module.subscriptions(settings)
    )
    task = asyncio.create_task(consumer.run())
    try:
        yield Running(lambda: not task.done(), service, lambda: repr(consumer.stats))
    finally:
        consumer.stop()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 20)
        await pool.close()


@contextlib.asynccontextmanager
async def large_message_producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    """A foreign producer that sends what the broker accepts (a 6 MB message included)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers(), acks="all", max_request_size=8 << 20
    )
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def applied(settings: Settings, database: str, event_ids: list[UUID]) -> bool:
    """The events are in the service's inbox (applied with their effect) and none is parked."""
    conn = await asyncpg.connect(settings.service_database_url(database))
    try:
        done = await conn.fetchval(
            "SELECT count(*) FROM dwsim_inbox i WHERE i.event_id = ANY($1::uuid[]) AND NOT "
            "EXISTS (SELECT FROM dwsim_parked_event p WHERE p.event_id = i.event_id)",
            event_ids,
        )
    except asyncpg.UndefinedTableError:  # the service has not migrated yet
        return False
    finally:
        await conn.close()
    return bool(done == len(event_ids))


async def read_to_high_water(
    settings: Settings, topics: list[str], expected: int, deadline_s: float = 60
) -> list[dict[str, Any]]:
    """Every message of the topics, read until at least `expected` arrived and every partition
    is read to its high-water mark (from fetch responses: the broker's ListOffsets lags)."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.bootstrap_servers(),
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
    )
    await consumer.start()
    letters: list[dict[str, Any]] = []
    try:

        async def read_all() -> bool:
            batch = await consumer.getmany(timeout_ms=100)
            letters.extend(json.loads(m.value) for ms in batch.values() for m in ms)
            if len(letters) < expected:
                return False
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                if high is None or await consumer.position(tp) < high:
                    return False
            return True

        await wait_for(read_all, deadline_s, what=f"{expected} letters on {topics}")
    finally:
        await consumer.stop()
    return letters


async def moved_past(settings: Settings, group: str, sent: list[Sent]) -> bool:
    """The service's consumer group committed offsets past each topic's valid event: it
    moved on by itself (the old code never did, until someone skipped offsets by hand)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers(), group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        for s in sent:
            committed = await consumer.committed(TopicPartition(s.topic, s.valid_at[0]))
            if committed is None or committed <= s.valid_at[1]:
                return False
        return True
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class Sent:
    """What the test put on one topic: two oversize messages, then a valid event."""

    topic: str
    garbage: bytes
    garbage_at: tuple[int, int]  # partition, offset
    padded: bytes
    padded_at: tuple[int, int]
    valid: Envelope[Any]
    valid_at: tuple[int, int]


def padded(event: Envelope[Any], size: int) -> bytes:
    """A valid event (an unknown field is ignored) made `size` bytes long."""
    body = json.loads(event.model_dump_json())
    body["padding"] = ""
    filler = size - len(json.dumps(body).encode())
    body["padding"] = "x" * filler
    value = json.dumps(body).encode()
    assert len(value) == size
    return value


# --------------------------------------------------------------------------------------------
# The regression


@pytest.mark.parametrize("size", SIZES, ids=["1.5MB", "6MB"])
@pytest.mark.parametrize("service", list(CONSUMED))
async def test_oversize_message_on_each_consumed_topic_is_dead_lettered_and_the_next_applied(
    settings: Settings, tmp_path: Path, service: str, size: int
) -> None:
    sent: list[Sent] = []
    async with (
        running_service(service, settings, tmp_path) as running,
        large_message_producer(settings) as producer,
    ):
        for topic in CONSUMED[service]:
            name = topic_name(topic, settings.topic_prefix)
            # One key: the valid event is behind the oversize ones on their partition.
            key = str(uuid4()).encode()
            garbage = bytes(range(256)) * (size // 256) + b"\x00" * (size % 256)
            first = await producer.send_and_wait(name, garbage, key=key)
            big = padded(VALID_EVENTS[topic](), size)
            second = await producer.send_and_wait(name, big, key=key)
            valid = VALID_EVENTS[topic]()
            third = await producer.send_and_wait(name, valid.model_dump_json().encode(), key=key)
            sent.append(
                Sent(
                    name,
                    garbage,
                    (first.partition, first.offset),
                    big,
                    (second.partition, second.offset),
                    valid,
                    (third.partition, third.offset),
                )
            )

        async def behind_applied() -> bool:
            assert running.alive(), f"{service} went down:\n{running.describe()}"
            return await applied(settings, running.database, [s.valid.event_id for s in sent])

        await wait_for(
            behind_applied, 90, what=f"{service} to apply the events behind the oversize ones"
        )
        group = f"{settings.topic_prefix}{service}"
        await wait_for(
            lambda: moved_past(settings, group, sent), 30, what=f"{group} to commit past them"
        )
        letters = await read_to_high_water(
            settings, [dlq_name(s.topic) for s in sent], 2 * len(sent)
        )
        assert running.alive(), f"{service} went down:\n{running.describe()}"

    by_place = {(x["topic"], x["partition"], x["offset"]): x for x in letters}
    assert len(by_place) == len(letters) == 2 * len(sent), sorted(by_place)
    for s in sent:
        for original, (partition, offset) in ((s.garbage, s.garbage_at), (s.padded, s.padded_at)):
            letter = by_place[(s.topic, partition, offset)]
            assert letter["reason"] == (
                f"message too large: {size} bytes, over the limit of "
                f"{settings.max_message_bytes} (max_message_bytes)"
            )
            assert letter["size"] == size
            assert letter["sha256"] == hashlib.sha256(original).hexdigest()
            assert letter["truncated"] is True
            kept = letter["value"]
            assert original.decode(errors="replace").startswith(kept)
            assert len(kept) > 100_000, "the letter keeps a useful part of the value"
