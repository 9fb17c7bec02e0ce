"""A fetched batch applied in one transaction, on the real PostgreSQL (no broker involved).

- `apply_batch_once`: one inbox statement for the batch, repeats skipped (seen before or twice
  in the batch), the new events applied together, and only when that fails one by one so that
  just the failing events are parked; a transient database error is raised, never parked;
- `outbox.add_many`: one statement, ids in list order, and the relay's wake-up at commit;
- Finance's `apply_staging_actuals`: a batch of mapped actuals staged at once, a repeat of an
  actual answered as a re-send, a refused one kept invalid with its reason, one receipt per
  delivery in delivery order; through the inbox, a poison actual parked and the rest staged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest

from schemas.envelope import Envelope
from schemas.mapped_events import StagingActualRecord
from schemas.topics import Topic, topic_name
from services.common import outbox
from services.common.db import DbConnection, create_pool, migrate_service
from services.common.inbox import ApplyMany, ApplyOne, Delivery, apply_batch_once
from services.common.settings import Settings
from services.finance import repository as finance_repository
from services.finance.handlers import apply_staging_actuals, subscriptions
from tests.integration.delivery_fixtures import Ping, effects, open_service_pool, record_effect
from tests.integration.finance.conftest import ACTUALS_MAP, actual_record, staging_event
from tests.waiting import holds, wait_for

pytestmark = pytest.mark.integration

TOPIC = "batch-test"
FINANCE_MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "finance" / "migrations"


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A service database with the shared tables (inbox, outbox, parked events) and `effect`."""
    pool = await open_service_pool(settings, "dataverse")
    yield pool
    await pool.close()


def ping(n: int) -> Delivery:
    """A delivery of a new Ping event, as the consumer loop hands it to the inbox."""
    event = outbox.envelope("ping", "test", Ping(n=n), correlation_id=f"inv-{n}")
    return Delivery(event, TOPIC, f"k{n}", event.model_dump_json().encode())


def bulk_effects(calls: list[list[int]]) -> ApplyMany:
    """An `apply_many` writing every event's effect in one statement; notes what it was given."""

    async def apply(conn: DbConnection, deliveries: list[Delivery]) -> None:
        calls.append([d.event.payload.n for d in deliveries])
        await conn.execute(
            "INSERT INTO effect (n, event_id) SELECT * FROM unnest($1::int[], $2::uuid[])",
            [d.event.payload.n for d in deliveries],
            [d.event.event_id for d in deliveries],
        )

    return apply


def effect_of(calls: list[int]) -> ApplyOne:
    """An `apply_one` writing the event's effect; notes which events it was given."""

    async def apply(conn: DbConnection, delivery: Delivery) -> None:
        calls.append(delivery.event.payload.n)
        await record_effect(conn, delivery.event)

    return apply


async def apply_committed(
    pool: asyncpg.Pool,
    deliveries: list[Delivery],
    apply_one: ApplyOne,
    apply_many: ApplyMany | None = None,
) -> list[str]:
    """`apply_batch_once` in a transaction of its own, committed, as the consumer loop does."""
    async with pool.acquire() as conn, conn.transaction():
        return await apply_batch_once(conn, deliveries, apply_one, apply_many)


async def inbox_ids(pool: asyncpg.Pool) -> set[UUID]:
    async with pool.acquire() as conn:
        return {r["event_id"] for r in await conn.fetch("SELECT event_id FROM dwsim_inbox")}


async def parked(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return list(await conn.fetch("SELECT * FROM dwsim_parked_event ORDER BY parked_at"))


# --------------------------------------------------------------------------------------------
# apply_batch_once


@pytest.mark.parametrize("bulk", [True, False], ids=["apply_many", "apply_one_each"])
async def test_batch_with_repeats_applies_each_new_event_once_and_reports_in_order(
    pool: asyncpg.Pool, bulk: bool
) -> None:
    """Proves that one batch holding new events, an event already in the inbox and a new event
    twice gets one outcome per delivery in delivery order (applied / duplicate), that the new
    events are applied exactly once each, in order of first appearance, by one `apply_many`
    call (or `apply_one` each when no batch handler is given), and that the repeats apply
    nothing."""
    old = ping(0)
    assert await apply_committed(pool, [old], effect_of([])) == ["applied"]
    first, second, third = ping(1), ping(2), ping(3)
    batch = [first, old, second, first, third]
    many_calls: list[list[int]] = []
    one_calls: list[int] = []

    outcomes = await apply_committed(
        pool, batch, effect_of(one_calls), bulk_effects(many_calls) if bulk else None
    )

    assert outcomes == ["applied", "duplicate", "applied", "duplicate", "applied"]
    if bulk:
        assert many_calls == [[1, 2, 3]]
        assert one_calls == []
    else:
        assert one_calls == [1, 2, 3]
    assert await effects(pool) == [0, 1, 2, 3]
    assert await inbox_ids(pool) == {d.event.event_id for d in (old, first, second, third)}
    assert await parked(pool) == []

    # The whole batch again (a redelivery after a lost offset commit): nothing applies.
    again = await apply_committed(
        pool, batch, effect_of(one_calls), bulk_effects(many_calls) if bulk else None
    )
    assert again == ["duplicate"] * len(batch)
    assert await effects(pool) == [0, 1, 2, 3]


BadApply = Callable[[DbConnection, Delivery], Awaitable[None]]


async def _python_refusal(conn: DbConnection, delivery: Delivery) -> None:
    raise ValueError(f"ping {delivery.event.payload.n} refused")


async def _sql_refusal(conn: DbConnection, delivery: Delivery) -> None:
    # A failing statement aborts the transaction: only a savepoint lets the batch go on.
    await conn.execute(
        "INSERT INTO effect (n, event_id) VALUES (NULL, $1)", delivery.event.event_id
    )


@pytest.mark.parametrize(
    ("refuse", "reason"),
    [
        (_python_refusal, "ValueError: ping 2 refused"),
        (
            _sql_refusal,
            'NotNullViolationError: null value in column "n" of relation "effect" '
            "violates not-null constraint",
        ),
    ],
    ids=["python_error", "sql_error"],
)
async def test_failing_batch_is_applied_one_by_one_and_only_the_bad_event_is_parked(
    pool: asyncpg.Pool, refuse: BadApply, reason: str
) -> None:
    """Proves that when `apply_many` fails because of one bad event (after it already wrote the
    effects of the good events before it), its partial work is rolled back and the events are
    applied one by one: the good ones once each, the bad one parked in `dwsim_parked_event`
    with its handler's reason, topic, key and bytes; the outcomes say which is which, the
    caller's transaction commits, and a redelivery of the batch changes nothing."""
    good1, bad, good3 = ping(1), ping(2), ping(3)
    batch = [good1, bad, good3]
    many_calls: list[list[int]] = []
    one_calls: list[int] = []

    async def apply_one(conn: DbConnection, delivery: Delivery) -> None:
        one_calls.append(delivery.event.payload.n)
        if delivery is bad:
            await refuse(conn, delivery)
        else:
            await record_effect(conn, delivery.event)

    async def apply_many(conn: DbConnection, deliveries: list[Delivery]) -> None:
        many_calls.append([d.event.payload.n for d in deliveries])
        for delivery in deliveries:
            await apply_one(conn, delivery)

    outcomes = await apply_committed(pool, batch, apply_one, apply_many)

    assert outcomes == ["applied", "parked", "applied"]
    assert many_calls == [[1, 2, 3]]
    # Together first (1, then 2 fails), then one by one (1, 2 parked, 3).
    assert one_calls == [1, 2, 1, 2, 3]
    assert await effects(pool) == [1, 3]
    [row] = await parked(pool)
    assert row["event_id"] == bad.event.event_id
    assert row["reason"].splitlines()[0] == reason  # PostgreSQL may add a DETAIL line
    assert (row["topic"], row["key"], row["event_type"]) == (TOPIC, "k2", "ping")
    assert bytes(row["value"]) == bad.value
    assert row["attempts"] == 1
    # A parked event counts as handled: its id is in the inbox, so a redelivery skips it.
    assert await inbox_ids(pool) == {d.event.event_id for d in batch}

    again = await apply_committed(pool, batch, apply_one, apply_many)
    assert again == ["duplicate"] * 3
    assert await effects(pool) == [1, 3]
    [row] = await parked(pool)
    assert row["attempts"] == 1


async def _deadlock(conn: DbConnection, deliveries: list[Delivery]) -> None:
    await bulk_effects([])(conn, deliveries)
    raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")


async def _refuse_batch(conn: DbConnection, deliveries: list[Delivery]) -> None:
    await bulk_effects([])(conn, deliveries)
    raise ValueError("one of them is bad")


async def _deadlock_on_ping_2(conn: DbConnection, delivery: Delivery) -> None:
    if delivery.event.payload.n == 2:
        raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
    await record_effect(conn, delivery.event)


@pytest.mark.parametrize(
    ("apply_one", "apply_many"),
    [(effect_of([]), _deadlock), (_deadlock_on_ping_2, _refuse_batch)],
    ids=["from_apply_many", "from_apply_one_after_batch_failed"],
)
async def test_transient_database_error_is_raised_never_parked(
    pool: asyncpg.Pool, apply_one: ApplyOne, apply_many: ApplyMany
) -> None:
    """Proves that a transient database error (a deadlock) raised while applying the batch
    together, or while applying it one by one after the batch failed, propagates out of
    `apply_batch_once` (so the consumer retries the whole batch) instead of parking an event:
    the caller's transaction rolls back and leaves no inbox row, no effect, no parked event."""
    batch = [ping(1), ping(2), ping(3)]
    with pytest.raises(asyncpg.exceptions.DeadlockDetectedError):
        await apply_committed(pool, batch, apply_one, apply_many)
    assert await effects(pool) == []
    assert await inbox_ids(pool) == set()
    assert await parked(pool) == []

    # The retry, with the database willing this time, applies the whole batch.
    assert await apply_committed(pool, batch, effect_of([]), bulk_effects([])) == ["applied"] * 3
    assert await effects(pool) == [1, 2, 3]


# --------------------------------------------------------------------------------------------
# outbox.add_many


async def test_add_many_keeps_list_order_in_ids_and_wakes_the_relay_at_commit(
    pool: asyncpg.Pool,
) -> None:
    """Proves that `outbox.add_many` writes 50 rows whose ids increase in list order (so the
    relay, which publishes by id, publishes them in that order), each with its topic, key and
    event bytes, and that the commit sends one NOTIFY on the relay's channel from the writer;
    and that it refuses to run outside a transaction."""
    rows = [
        (f"topic-{n % 3}", None if n % 5 == 0 else f"key-{49 - n}", ping(n).event)
        for n in range(50)
    ]
    notified: list[tuple[int, str]] = []

    def on_notify(_: Any, pid: int, channel: str, __: object) -> None:
        notified.append((pid, channel))

    async with pool.acquire() as listener:
        await listener.add_listener(outbox.NOTIFY_CHANNEL, on_notify)
        try:
            async with pool.acquire() as writer:
                writer_pid = writer.get_server_pid()
                with pytest.raises(RuntimeError, match="inside the transaction"):
                    await outbox.add_many(writer, rows)
                async with writer.transaction():
                    await outbox.add_many(writer, rows)
            await wait_for(holds(lambda: bool(notified)), deadline_s=10, what="the NOTIFY")
        finally:
            await listener.remove_listener(outbox.NOTIFY_CHANNEL, on_notify)
        stored = await listener.fetch(
            "SELECT id, event_id, topic, key, event_type, value FROM dwsim_outbox ORDER BY id"
        )
    assert notified == [(writer_pid, outbox.NOTIFY_CHANNEL)]
    assert [r["event_id"] for r in stored] == [e.event_id for _, _, e in rows]
    ids = [r["id"] for r in stored]
    assert ids == sorted(ids) and len(set(ids)) == 50
    assert [(r["topic"], r["key"]) for r in stored] == [(t, k) for t, k, _ in rows]
    assert all(r["event_type"] == "ping" for r in stored)
    decoded = [Envelope[Ping].model_validate_json(bytes(r["value"])) for r in stored]
    assert [e.payload.n for e in decoded] == list(range(50))


# --------------------------------------------------------------------------------------------
# Finance: staging a batch of mapped actuals


@pytest.fixture
async def finance_pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """Finance's database, migrated, with legal entity USPM set up (DEMF is unknown)."""
    pool = await create_pool(settings.service_database_url("finance"))
    await migrate_service(pool, "finance", FINANCE_MIGRATIONS)
    async with pool.acquire() as conn, conn.transaction():
        await finance_repository.upsert_legal_entity(conn, "USPM", "USD", None, None, 2026)
    yield pool
    await pool.close()


def mapped(record: StagingActualRecord, record_id: UUID | None = None) -> Envelope[Any]:
    """A mapped actual as the bridge sends it, a run of one; a re-send repeats the record id."""
    return staging_event([(record, record_id or uuid4())])


def record_id_of(event: Envelope[Any]) -> UUID:
    """The bridge record id of a run of one."""
    [item] = event.payload.records
    record_id: UUID = item.record_id
    return record_id


def record_of(event: Envelope[Any]) -> StagingActualRecord:
    [item] = event.payload.records
    record: StagingActualRecord = item.record
    return record


async def receipts_in_outbox(pool: asyncpg.Pool, settings: Settings) -> list[dict[str, Any]]:
    """The receipts Finance wrote, in outbox (= publishing) order, each with the key and
    number of the message that carries it."""
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT topic, key, value FROM dwsim_outbox ORDER BY id")
    topic = topic_name(Topic.SYNC_RECEIPTS, settings.topic_prefix)
    assert all(r["topic"] == topic for r in rows)
    receipts = []
    for number, r in enumerate(rows):
        envelope = Envelope[Any].model_validate_json(bytes(r["value"]))
        assert envelope.correlation_id == r["key"] or envelope.correlation_id is None
        for answer in envelope.payload["receipts"]:
            receipts.append({"key": r["key"], "message": number, **answer})
    return receipts


async def test_staging_batch_with_a_resent_actual_and_an_unknown_legal_entity(
    settings: Settings, finance_pool: asyncpg.Pool
) -> None:
    """Proves that `apply_staging_actuals` on one batch holding the same actual twice (the
    bridge's re-send: new event, same record) and an actual of an unknown legal entity stages
    one row per actual (the repeat is not inserted twice and stays valid), keeps the refused
    actual as invalid with Finance's reason, and answers every delivery with one receipt, in
    delivery order: applied for the actual and its re-send, rejected with the reason for the
    unknown legal entity; and that the same actuals re-sent in a later batch are answered
    again without changing a staged row."""
    first = actual_record("BilledSales", msdyn_invoice=uuid4())
    second = actual_record("Cost")
    unknown = actual_record("Cost", msdyn_legalentity="DEMF")
    unknown_id = str(unknown.msdyn_actualid)
    reason = f"unknown legal entity DEMF on actual {unknown_id}"
    sent_first = mapped(first)
    events = [
        sent_first,
        mapped(second),
        mapped(first, record_id=record_id_of(sent_first)),  # the re-send, in the same batch
        mapped(unknown),
    ]
    async with finance_pool.acquire() as conn, conn.transaction():
        await apply_staging_actuals(conn, settings, events)

    async with finance_pool.acquire() as conn:
        staged = await conn.fetch(
            "SELECT actual_id, legal_entity, status, reason, transaction_type "
            "FROM actuals_staging ORDER BY actual_id"
        )
    assert sorted(
        (str(r["actual_id"]), r["status"], r["reason"], r["legal_entity"]) for r in staged
    ) == sorted(
        [
            (str(first.msdyn_actualid), "valid", None, "USPM"),
            (str(second.msdyn_actualid), "valid", None, "USPM"),
            (unknown_id, "invalid", reason, "DEMF"),
        ]
    )
    receipts = await receipts_in_outbox(finance_pool, settings)
    assert [(r["record_key"], r["outcome"], r["reason"]) for r in receipts] == [
        (str(first.msdyn_actualid), "applied", None),
        (str(second.msdyn_actualid), "applied", None),
        (str(first.msdyn_actualid), "applied", None),
        (unknown_id, "rejected", reason),
    ]
    # Each receipt answers its own delivery: the bridge's record id, and the event it answers.
    assert [r["source_event_id"] for r in receipts] == [str(record_id_of(e)) for e in events]
    assert [r["answers_event_id"] for r in receipts] == [str(e.event_id) for e in events]
    # Keyed by invoice (else project), so that a record's answers stay on one partition.
    assert [r["key"] for r in receipts] == [e.correlation_id for e in events]
    assert all(r["map_name"] == ACTUALS_MAP and r["target"] == "finance" for r in receipts)

    # A later batch re-sending all of them: answered again, nothing staged anew.
    async with finance_pool.acquire() as conn:
        before = await conn.fetch("SELECT * FROM actuals_staging ORDER BY actual_id")
    resent = [mapped(record_of(e), record_id=record_id_of(e)) for e in (events[1], events[0])]
    async with finance_pool.acquire() as conn, conn.transaction():
        await apply_staging_actuals(conn, settings, resent)
    async with finance_pool.acquire() as conn:
        after = await conn.fetch("SELECT * FROM actuals_staging ORDER BY actual_id")
    assert after == before
    later = (await receipts_in_outbox(finance_pool, settings))[4:]
    assert [(r["record_key"], r["outcome"]) for r in later] == [
        (str(second.msdyn_actualid), "applied"),
        (str(first.msdyn_actualid), "applied"),
    ]


async def test_a_message_carrying_a_run_of_actuals_answers_each_by_its_record_id(
    settings: Settings, finance_pool: asyncpg.Pool
) -> None:
    """Proves that one `fo-actuals-staging` message carrying a run of three actuals of one
    invoice (one of them refused) stages each, and answers each by its own bridge record id
    in the run's order, all in one receipts message keyed by the invoice that answers that
    one event."""
    invoice_id = uuid4()
    run = [
        (actual_record("BilledSales", msdyn_invoice=invoice_id), uuid4()),
        (
            actual_record("UnbilledSales", msdyn_invoice=invoice_id, msdyn_legalentity="DEMF"),
            uuid4(),
        ),
        (actual_record("BilledSales", msdyn_invoice=invoice_id), uuid4()),
    ]
    event = staging_event(run)
    async with finance_pool.acquire() as conn, conn.transaction():
        await apply_staging_actuals(conn, settings, [event])

    async with finance_pool.acquire() as conn:
        statuses = {
            r["actual_id"]: r["status"]
            for r in await conn.fetch("SELECT actual_id, status FROM actuals_staging")
        }
    assert statuses == {
        run[0][0].msdyn_actualid: "valid",
        run[1][0].msdyn_actualid: "invalid",
        run[2][0].msdyn_actualid: "valid",
    }
    receipts = await receipts_in_outbox(finance_pool, settings)
    assert [(r["source_event_id"], r["record_key"], r["outcome"]) for r in receipts] == [
        (str(rid), str(record.msdyn_actualid), outcome)
        for (record, rid), outcome in zip(run, ["applied", "rejected", "applied"], strict=True)
    ]
    assert {r["answers_event_id"] for r in receipts} == {str(event.event_id)}
    assert {(r["key"], r["message"]) for r in receipts} == {(str(invoice_id), 0)}


async def test_staging_batch_with_a_refused_actual_twice_rejects_both_and_keeps_one_row(
    settings: Settings, finance_pool: asyncpg.Pool
) -> None:
    """Proves that an actual of an unknown legal entity sent twice in one batch (a re-send)
    is stored once, invalid with its reason, and both deliveries are answered rejected with
    that reason, in order around a valid actual."""
    unknown = actual_record("Cost", msdyn_legalentity="DEMF")
    good = actual_record("Cost")
    reason = f"unknown legal entity DEMF on actual {unknown.msdyn_actualid}"
    sent = mapped(unknown)
    events = [sent, mapped(good), mapped(unknown, record_id=record_id_of(sent))]
    async with finance_pool.acquire() as conn, conn.transaction():
        await apply_staging_actuals(conn, settings, events)
    async with finance_pool.acquire() as conn:
        staged = await conn.fetch(
            "SELECT actual_id, status, reason FROM actuals_staging WHERE legal_entity = 'DEMF'"
        )
    assert [(r["status"], r["reason"]) for r in staged] == [("invalid", reason)]
    receipts = await receipts_in_outbox(finance_pool, settings)
    assert [(r["record_key"], r["outcome"], r["reason"]) for r in receipts] == [
        (str(unknown.msdyn_actualid), "rejected", reason),
        (str(good.msdyn_actualid), "applied", None),
        (str(unknown.msdyn_actualid), "rejected", reason),
    ]


async def test_staging_batch_through_the_inbox_consumer_path(
    settings: Settings, finance_pool: asyncpg.Pool
) -> None:
    """Proves that Finance's staging subscription, driven through `apply_batch_once` as the
    consumer loop drives it, stages a batch with its batch handler: a redelivered event (same
    event id) is a duplicate without a second receipt, and every new delivery gets exactly one
    receipt, in order."""
    [staging] = [
        s
        for s in subscriptions(settings)
        if s.topic == topic_name(Topic.FO_ACTUALS_STAGING, settings.topic_prefix)
    ]
    assert staging.batch_handler is not None
    events = [mapped(actual_record("Cost")) for _ in range(4)]
    deliveries = [Delivery(e, staging.topic, "k", e.model_dump_json().encode()) for e in events]
    batch = [*deliveries[:2], deliveries[0], *deliveries[2:]]

    async def one(conn: DbConnection, delivery: Delivery) -> None:
        await staging.handler(conn, delivery.event)

    async with finance_pool.acquire() as conn, conn.transaction():
        outcomes = await apply_batch_once(conn, batch, one, staging.batch_handler)
    assert outcomes == ["applied", "applied", "duplicate", "applied", "applied"]
    receipts = await receipts_in_outbox(finance_pool, settings)
    assert [r["record_key"] for r in receipts] == [str(record_of(e).msdyn_actualid) for e in events]
    assert {r["outcome"] for r in receipts} == {"applied"}
    async with finance_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM actuals_staging") == 4


async def test_staging_batch_with_a_poison_actual_parks_it_and_stages_the_others_once(
    settings: Settings, finance_pool: asyncpg.Pool
) -> None:
    """Proves that when Finance's bulk staging of a batch fails because of one actual that
    PostgreSQL cannot store (a NUL character in a text field), the inbox applies the batch one
    by one: the other actuals are staged once, with exactly one receipt each in delivery order
    (the receipts of the failed bulk attempt are rolled back with it), and the poison actual
    is parked with the database's reason, staged nowhere and answered nowhere."""
    [staging] = [
        s
        for s in subscriptions(settings)
        if s.topic == topic_name(Topic.FO_ACTUALS_STAGING, settings.topic_prefix)
    ]
    assert staging.batch_handler is not None
    good1, good2 = actual_record("Cost"), actual_record("Cost")
    poison = actual_record("Cost", msdyn_bookableresource="Ada\x00Lovelace")
    events = [mapped(good1), mapped(poison), mapped(good2)]
    deliveries = [Delivery(e, staging.topic, "k", e.model_dump_json().encode()) for e in events]

    async def one(conn: DbConnection, delivery: Delivery) -> None:
        await staging.handler(conn, delivery.event)

    async with finance_pool.acquire() as conn, conn.transaction():
        outcomes = await apply_batch_once(conn, deliveries, one, staging.batch_handler)

    assert outcomes == ["applied", "parked", "applied"]
    receipts = await receipts_in_outbox(finance_pool, settings)
    assert [(r["record_key"], r["outcome"]) for r in receipts] == [
        (str(good1.msdyn_actualid), "applied"),
        (str(good2.msdyn_actualid), "applied"),
    ]
    async with finance_pool.acquire() as conn:
        staged = {r["actual_id"] for r in await conn.fetch("SELECT actual_id FROM actuals_staging")}
        [row] = await conn.fetch("SELECT event_id, reason FROM dwsim_parked_event")
    assert staged == {good1.msdyn_actualid, good2.msdyn_actualid}
    assert row["event_id"] == events[1].event_id
    assert "0x00" in row["reason"], row["reason"]
