"""The bridge applying a fetched batch in one transaction, in-process on the real PostgreSQL.

`BridgeProcessor.process_batch` is what the bridge's agents call with the messages of one
fetch; these tests hand it batches directly (no broker needed) and read the bridge's database:
records, outbox rows, errors.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from pydantic import BaseModel

from schemas.dataverse_events import ActualCreated, ActualsCreated
from schemas.receipts import ReceiptOutcome, SyncReceipt, SyncReceipts
from schemas.topics import Topic, topic_name
from schemas.vocabulary import TransactionType
from services.bridge import filtered_repository as filtered_repo
from services.bridge import queries
from services.bridge import repository as repo
from services.bridge.domain import MapAction
from services.bridge.handlers import BridgeProcessor, seed
from services.bridge.table_maps import ACTUALS_MAP_NAME
from services.common.db import create_pool, migrate_service
from services.common.inbox import Message
from services.common.metrics import ROUND_TRIP_BUCKETS
from services.common.settings import Settings
from tests.integration.bridge.bridge_harness import actual_created, envelope, per_record

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).resolve().parents[3] / "services" / "bridge" / "migrations"


@pytest.fixture
async def processor(settings: Settings) -> AsyncIterator[BridgeProcessor]:
    """The bridge's processor on its own database, migrated and seeded (maps running)."""
    pool = await create_pool(settings.service_database_url("bridge"))
    await migrate_service(pool, "bridge", MIGRATIONS)
    await seed(pool)
    yield BridgeProcessor(pool, settings)
    await pool.close()


class Messages:
    """Incoming messages of one partition, offsets counting up as a fetch hands them over."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.offset = 0

    def message(self, topic: Topic, key: str | None, value: bytes) -> Message:
        self.offset += 1
        return Message(
            topic_name(topic, self.settings.topic_prefix),
            0,
            self.offset,
            None if key is None else key.encode(),
            value,
        )

    def actual(self, *actuals: ActualCreated) -> Message:
        """An actuals-created message carrying these actuals, as Dataverse's relay sends a
        transaction's run of one invoice (key and correlation: the first one's invoice id)."""
        invoice_id = actuals[0].invoice_id
        correlation = None if invoice_id is None else str(invoice_id)
        payload = ActualsCreated(actuals=list(actuals))
        value = envelope("actuals.created", "dataverse", payload, correlation)
        return self.message(Topic.ACTUALS_CREATED, str(invoice_id), value)

    def receipts(self, *receipts: SyncReceipt) -> Message:
        """One `sync-receipts` message carrying these answers (a target transaction's)."""
        payload = SyncReceipts(receipts=list(receipts))
        return self.message(Topic.SYNC_RECEIPTS, receipts[0].record_key, _bytes(payload))


def _bytes(payload: BaseModel) -> bytes:
    return envelope("sync.receipts", "finance", payload, None)


def kinds(outcomes: list[Any]) -> list[str]:
    return [o.kind for o in outcomes]


async def records(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """The bridge's records in insertion (seq) order."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT record_id, record_key, status, reason, attempts, message_key "
            "FROM bridge_record ORDER BY seq"
        )
    return [dict(r) for r in rows]


async def filtered_counts(pool: asyncpg.Pool, invoice_id: UUID) -> list[tuple[str, str, int]]:
    """The invoice's filtered source rows as the bridge counted them: (leg, reason, rows)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT leg_name, reason, source_rows FROM bridge_filtered_count "
            "WHERE invoice_id = $1 ORDER BY leg_name, reason",
            str(invoice_id),
        )
    return [(r["leg_name"], r["reason"], r["source_rows"]) for r in rows]


async def outbox_rows(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """The bridge's outbox in id (= publishing) order, each with its event decoded."""
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT topic, key, value FROM dwsim_outbox ORDER BY id")
    return [{"topic": r["topic"], "key": r["key"], **json.loads(bytes(r["value"]))} for r in rows]


async def test_batch_of_actuals_is_forwarded_once_in_order_and_a_repeat_is_all_duplicates(
    settings: Settings, processor: BridgeProcessor
) -> None:
    """Proves that one batch of actuals-created events for the running actuals map (with a
    skip-sync actual, a message that does not validate, a redelivered event and a message
    carrying two actuals among them)
    gets one outcome per message in order, inserts each forwarded record once (pending with
    one attempt), counts the skip-sync one as filtered without a record, writes the forwarded
    records (one invoice, one key) as a run in ONE outbox row, in the order of the events, on
    the staging topic with the source message's key and each record's id beside it; and that
    processing the same batch again yields only duplicates (and the same dead letter) without
    a new record, outbox row or count."""
    messages = Messages(settings)
    invoice_id = uuid4()
    forwarded = [actual_created(invoice_id=invoice_id) for _ in range(5)]
    skipped = actual_created(
        invoice_id=invoice_id,
        transaction_type=TransactionType.UNBILLED_SALES,
        skip_sync=True,
    )
    first = messages.actual(forwarded[0])
    batch = [
        first,
        messages.actual(forwarded[1]),
        messages.actual(skipped),
        messages.message(Topic.ACTUALS_CREATED, str(invoice_id), b'{"not": "an event"}'),
        messages.actual(forwarded[2]),
        first,  # redelivered within the same fetch
        messages.actual(forwarded[3], forwarded[4]),
    ]

    outcomes = await processor.process_batch(batch)

    assert kinds(outcomes) == [
        "applied",
        "applied",
        "applied",
        "dead_letter",
        "applied",
        "duplicate",
        "applied",
    ]
    letter = outcomes[3].dead_letter
    assert letter is not None and letter.offset == batch[3].offset
    forwarded_ids = [str(a.actual_id) for a in forwarded]
    stored = await records(processor.pool)
    # Forwarded records are inserted in event order; the filtered one is counted, not stored.
    pending = [r for r in stored if r["status"] == "pending"]
    assert [r["record_key"] for r in pending] == forwarded_ids
    assert pending == stored
    counted = await filtered_counts(processor.pool, invoice_id)
    assert counted == [("actuals to staging", "skip sync", 1)]
    assert all(r["attempts"] == 1 and r["message_key"] == str(invoice_id) for r in pending)
    sent = await outbox_rows(processor.pool)
    staging = topic_name(Topic.FO_ACTUALS_STAGING, settings.topic_prefix)
    [message] = sent
    assert message["topic"] == staging and message["key"] == str(invoice_id)
    assert message["source"] == ACTUALS_MAP_NAME and message["causation_id"] is None
    assert message["correlation_id"] == str(invoice_id)
    views = per_record(message)
    assert [v["payload"]["msdyn_actualid"] for v in views] == forwarded_ids
    assert [v["causation_id"] for v in views] == [str(r["record_id"]) for r in pending]
    stats = (processor.stats.applied, processor.stats.duplicates, processor.stats.dead_lettered)
    assert stats == (5, 1, 1)

    again = await processor.process_batch(batch)

    assert kinds(again) == ["duplicate"] * 3 + ["dead_letter"] + ["duplicate"] * 3
    assert await records(processor.pool) == stored
    assert await outbox_rows(processor.pool) == sent
    assert await filtered_counts(processor.pool, invoice_id) == counted


async def test_poison_event_in_a_batch_is_parked_and_the_others_forwarded_once_in_order(
    settings: Settings, processor: BridgeProcessor
) -> None:
    """Proves that when the bulk path fails for a batch because of one event the database
    cannot store (a NUL character, refused in jsonb), the batch is applied one by one: that
    event is parked with the database's reason and leaves no record, the other events are
    forwarded once each with their outbox rows in event order (nothing of the failed bulk
    attempt survives), and a redelivery of the batch changes nothing."""
    messages = Messages(settings)
    invoice_id = uuid4()
    good = [actual_created(invoice_id=invoice_id) for _ in range(3)]
    poison = actual_created(invoice_id=invoice_id, resource="Ada\x00Lovelace")
    batch = [
        messages.actual(good[0]),
        messages.actual(poison),
        messages.actual(good[1]),
        messages.actual(good[2]),
    ]

    assert kinds(await processor.process_batch(batch)) == [
        "applied",
        "parked",
        "applied",
        "applied",
    ]

    good_ids = [str(a.actual_id) for a in good]
    stored = await records(processor.pool)
    assert [r["record_key"] for r in stored] == good_ids
    # One by one after the failed bulk attempt: a message per event, each a run of one.
    sent = await outbox_rows(processor.pool)
    views = [v for m in sent for v in per_record(m)]
    assert [v["payload"]["msdyn_actualid"] for v in views] == good_ids
    assert [v["causation_id"] for v in views] == [str(r["record_id"]) for r in stored]
    assert len(sent) == 3 and all(v["run_size"] == 1 for v in views)
    async with processor.pool.acquire() as conn:
        [row] = await conn.fetch("SELECT event_id, reason, value FROM dwsim_parked_event")
    assert bytes(row["value"]) == batch[1].value
    assert row["reason"].startswith("UntranslatableCharacterError"), row["reason"]

    assert kinds(await processor.process_batch(batch)) == ["duplicate"] * 4
    assert await records(processor.pool) == stored
    assert await outbox_rows(processor.pool) == sent


async def test_a_filtered_row_leaves_no_record_and_is_counted_once_whatever_the_redeliveries(
    settings: Settings, processor: BridgeProcessor
) -> None:
    """Proves that skip-sync actuals (one alone, one beside its billed actual in a message)
    write no bridge record and are counted once each, per invoice and reason: not twice when
    a poison event makes the batch's bulk attempt roll back and apply one by one, and not
    again when a later fetch redelivers their messages; the map's summary says the same."""
    messages = Messages(settings)
    invoice_id = uuid4()
    billed = actual_created(invoice_id=invoice_id)
    reversals = [
        actual_created(
            invoice_id=invoice_id,
            transaction_type=TransactionType.UNBILLED_SALES,
            skip_sync=True,
        )
        for _ in range(2)
    ]
    poison = actual_created(invoice_id=invoice_id, resource="Ada\x00Lovelace")
    alone, beside = messages.actual(reversals[0]), messages.actual(billed, reversals[1])
    batch = [alone, messages.actual(poison), beside]

    assert kinds(await processor.process_batch(batch)) == ["applied", "parked", "applied"]
    assert [r["record_key"] for r in await records(processor.pool)] == [str(billed.actual_id)]
    assert await filtered_counts(processor.pool, invoice_id) == [
        ("actuals to staging", "skip sync", 2)
    ]

    assert kinds(await processor.process_batch([beside, alone])) == ["duplicate"] * 2
    assert await filtered_counts(processor.pool, invoice_id) == [
        ("actuals to staging", "skip sync", 2)
    ]
    async with processor.pool.acquire() as conn:
        summary = (await queries.stats(conn))[ACTUALS_MAP_NAME]
        listed = await filtered_repo.list_counts(conn, invoice_id=str(invoice_id))
    assert summary["filtered"] == 2 and summary["pending"] == 1
    assert [(c["map_name"], c["invoice_id"], c["source_rows"]) for c in listed] == [
        (ACTUALS_MAP_NAME, str(invoice_id), 2)
    ]


async def test_held_records_superseded_by_an_initial_sync_keep_their_rows_and_are_counted(
    settings: Settings, processor: BridgeProcessor
) -> None:
    """Proves that records held while the map was stopped, once an initial sync supersedes
    them, keep their rows (filtered, with the run named in the reason) and are counted with
    the filtered source rows once, beside the skip-sync reversal counted on arrival; the
    summary reads the counts alone."""
    messages = Messages(settings)
    invoice_id = uuid4()
    billed = actual_created(invoice_id=invoice_id)
    reversal = actual_created(
        invoice_id=invoice_id, transaction_type=TransactionType.UNBILLED_SALES, skip_sync=True
    )
    await processor.commands.change_state("actuals", MapAction.STOP)
    assert kinds(await processor.process_batch([messages.actual(billed, reversal)])) == ["applied"]
    [held] = await records(processor.pool)
    assert held["status"] == "not_synced"

    run = await processor.commands.start_initial_sync("actuals")

    [superseded] = await records(processor.pool)
    assert superseded["record_id"] == held["record_id"]
    assert superseded["status"] == "filtered"
    assert str(run.run_id) in superseded["reason"]
    assert await filtered_counts(processor.pool, invoice_id) == [
        ("actuals to staging", "skip sync", 1),
        ("actuals to staging", superseded["reason"], 1),
    ]
    async with processor.pool.acquire() as conn:
        summary = (await queries.stats(conn))[ACTUALS_MAP_NAME]
    assert summary["filtered"] == 2


def receipt_for(
    record: dict[str, Any], outcome: ReceiptOutcome, reason: str | None = None
) -> SyncReceipt:
    return SyncReceipt(
        map_name=ACTUALS_MAP_NAME,
        record_key=record["record_key"],
        source_event_id=record["record_id"],
        outcome=outcome,
        reason=reason,
        target="finance",
        answers_event_id=uuid4(),
    )


async def test_batch_of_receipts_settles_each_record_once(
    settings: Settings, processor: BridgeProcessor
) -> None:
    """Proves that one batch of receipt messages (bulk `on_receipts`), one of them carrying
    several answers, settles the records they answer, in receipt order: applied ones become
    synced, a rejected one fails into the error queue with the target's reason, a record
    rejected and then applied within the same batch ends synced with its error resolved, and
    a receipt for an unknown record changes nothing; and that the same batch again is all
    duplicates and changes nothing."""
    messages = Messages(settings)
    invoice_id = uuid4()
    actuals = [actual_created(invoice_id=invoice_id) for _ in range(4)]
    assert (
        kinds(await processor.process_batch([messages.actual(a) for a in actuals]))
        == ["applied"] * 4
    )
    r1, r2, r3, r4 = await records(processor.pool)
    unknown = {"record_key": "nobody", "record_id": uuid4()}
    batch = [
        messages.receipts(
            receipt_for(r1, ReceiptOutcome.APPLIED),
            receipt_for(r2, ReceiptOutcome.REJECTED, "period closed"),
            receipt_for(r3, ReceiptOutcome.REJECTED, "rate missing"),
        ),
        messages.receipts(receipt_for(unknown, ReceiptOutcome.APPLIED)),
        messages.receipts(receipt_for(r3, ReceiptOutcome.APPLIED)),  # the re-send applied
    ]

    assert kinds(await processor.process_batch(batch)) == ["applied"] * 3

    after = {r["record_id"]: r for r in await records(processor.pool)}
    assert after[r1["record_id"]]["status"] == "synced"
    assert after[r2["record_id"]]["status"] == "failed"
    assert after[r2["record_id"]]["reason"] == "finance refused: period closed"
    assert after[r3["record_id"]]["status"] == "synced"
    assert after[r4["record_id"]]["status"] == "pending"
    errors = await _errors(processor.pool)
    assert errors == [
        (r2["record_id"], "target_refused", "finance refused: period closed", "open"),
        (r3["record_id"], "target_refused", "finance refused: rate missing", "resolved"),
    ]
    outbox_before = await outbox_rows(processor.pool)

    assert kinds(await processor.process_batch(batch)) == ["duplicate"] * 3
    assert {r["record_id"]: r for r in await records(processor.pool)} == after
    assert await _errors(processor.pool) == errors
    assert await outbox_rows(processor.pool) == outbox_before


async def _errors(pool: asyncpg.Pool) -> list[tuple[UUID, str, str, str]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT record_id, error_type, reason, status FROM bridge_error ORDER BY id"
        )
    return [(r["record_id"], r["error_type"], r["reason"], r["status"]) for r in rows]


async def test_settling_receipts_counts_round_trips_per_map_in_prometheus_buckets(
    settings: Settings, processor: BridgeProcessor
) -> None:
    """Proves that the statement settling records synced returns their round trips already
    counted per map and bucket, with Prometheus' `le` at the edges: a round trip equal to a
    bound falls in that bound's bucket, one just above it in the next, one beyond the last
    bound in +Inf; a record never sent is settled but not counted."""
    messages = Messages(settings)
    sent_ago = [0.01, 0.0101, 0.3, 400.0, None]
    actuals = [actual_created(invoice_id=uuid4()) for _ in sent_ago]
    await processor.process_batch([messages.actual(a) for a in actuals])
    ids = [r["record_id"] for r in await records(processor.pool)]
    assert len(ids) == len(sent_ago)
    async with processor.pool.acquire() as conn, conn.transaction():
        for record_id, ago in zip(ids, sent_ago, strict=True):
            await conn.execute(
                "UPDATE bridge_record SET last_sent_at = now() - make_interval(secs => $2) "
                "WHERE record_id = $1",
                record_id,
                ago,
            )
        counts = await repo.set_records_synced(conn, ids)
    assert sorted((c.map_name, c.bucket, c.records) for c in counts) == [
        (ACTUALS_MAP_NAME, 0, 1),  # 0.01: the first bound, `le="0.01"`
        (ACTUALS_MAP_NAME, 1, 1),  # 0.0101: `le="0.025"`
        (ACTUALS_MAP_NAME, 5, 1),  # 0.3: `le="0.5"`
        (ACTUALS_MAP_NAME, len(ROUND_TRIP_BUCKETS), 1),  # 400: +Inf
    ]
    assert sum(c.seconds for c in counts) == pytest.approx(400.3201)
    assert {r["status"] for r in await records(processor.pool)} == {"synced"}
