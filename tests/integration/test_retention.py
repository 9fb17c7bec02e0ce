"""Bounded storage (issue 23, item 5), on the real PostgreSQL: what is past its retention is
pruned in batches, what is younger (or still needed) is kept, and an event whose id is still
retained is still deduplicated when it comes again."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest

from services.bridge.handlers import seed
from services.bridge.table_maps import ACTUALS_MAP_NAME
from services.bridge.workers import BRIDGE_PRUNE_RULES
from services.common import outbox
from services.common.db import create_pool, migrate_service
from services.common.retention import COMMON_RULES, RetentionWorker, prune_once
from services.common.settings import Settings
from tests.integration.delivery_fixtures import effects, open_service_pool
from tests.integration.test_batch_apply import apply_committed, effect_of, ping
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

BRIDGE_MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "bridge" / "migrations"
RETENTION_S = 3600.0
# Ages past the retention and well within it, by the database's clock (`AGO` of one).
OLD = RETENTION_S + 600
YOUNG = RETENTION_S - 600
AGO = "now() - make_interval(secs => {})"


def retaining(settings: Settings, **extra: Any) -> Settings:
    """The test's settings with an hour's retention and batches of 2 rows, so that a handful
    of old rows takes several statements."""
    values: dict[str, Any] = {
        "retention_s": RETENTION_S,
        "inbox_retention_s": RETENTION_S,
        "retention_batch_rows": 2,
        "retention_pause_s": 0.0,
    }
    return settings.model_copy(update={**values, **extra})


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await open_service_pool(settings, "dataverse")
    yield pool
    await pool.close()


@pytest.fixture
async def bridge_pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(settings.service_database_url("bridge"))
    await migrate_service(pool, "bridge", BRIDGE_MIGRATIONS)
    await seed(pool)
    yield pool
    await pool.close()


async def add_outbox_rows(pool: asyncpg.Pool, n: int, age_s: float | None) -> set[UUID]:
    """`n` outbox rows, published `age_s` ago, or not yet published when None."""
    ids: set[UUID] = set()
    async with pool.acquire() as conn, conn.transaction():
        for i in range(n):
            event = outbox.envelope("ping", "test", ping(i).event.payload)
            await outbox.add(conn, "retention-test", f"k{i}", event)
            ids.add(event.event_id)
        if age_s is not None:
            await conn.execute(
                f"UPDATE dwsim_outbox SET published_at = {AGO.format('$2')} "
                "WHERE event_id = ANY($1::uuid[])",
                list(ids),
                age_s,
            )
    return ids


EVENT_IDS = {
    "dwsim_outbox": "SELECT event_id FROM dwsim_outbox",
    "dwsim_inbox": "SELECT event_id FROM dwsim_inbox",
}


async def ids_in(pool: asyncpg.Pool, table: str) -> set[UUID]:
    async with pool.acquire() as conn:
        return {r["event_id"] for r in await conn.fetch(EVENT_IDS[table])}


async def test_published_outbox_rows_and_inbox_ids_past_retention_are_pruned_in_batches(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """Proves that published outbox rows and inbox ids older than their retention are deleted,
    five old outbox rows in batches of two (three statements), while younger published rows,
    unpublished rows however old, and younger inbox ids are kept."""
    old_published = await add_outbox_rows(pool, 5, OLD)
    young_published = await add_outbox_rows(pool, 2, YOUNG)
    unpublished = await add_outbox_rows(pool, 2, None)
    async with pool.acquire() as conn:
        await conn.execute(
            f"UPDATE dwsim_outbox SET created_at = {AGO.format('$1')} WHERE published_at IS NULL",
            OLD,
        )
    forgotten, remembered = ping(1), ping(2)
    await apply_committed(pool, [forgotten, remembered], effect_of([]))
    async with pool.acquire() as conn:
        await conn.execute(
            f"UPDATE dwsim_inbox SET applied_at = {AGO.format('$2')} WHERE event_id = $1",
            forgotten.event.event_id,
            OLD,
        )

    pruned = await prune_once(pool, retaining(settings), COMMON_RULES)

    assert pruned == {"outbox_published": 5, "inbox_ids": 1}
    assert await ids_in(pool, "dwsim_outbox") == young_published | unpublished
    assert old_published.isdisjoint(await ids_in(pool, "dwsim_outbox"))
    assert await ids_in(pool, "dwsim_inbox") == {remembered.event.event_id}
    # Nothing is left to prune: a second run finds nothing.
    assert await prune_once(pool, retaining(settings), COMMON_RULES) == {
        "outbox_published": 0,
        "inbox_ids": 0,
    }


async def test_a_redelivered_event_whose_id_is_still_retained_is_still_a_duplicate(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """Proves that pruning leaves the dedupe of retained ids intact: an event applied within
    the retention, delivered again after a pruning run, is a duplicate and applies nothing;
    only an id past the retention is forgotten (why the retention must outlast every
    redelivery, see services/common/retention.py)."""
    within, past = ping(1), ping(2)
    await apply_committed(pool, [within, past], effect_of([]))
    async with pool.acquire() as conn:
        for delivery, age_s in ((within, YOUNG), (past, OLD)):
            await conn.execute(
                f"UPDATE dwsim_inbox SET applied_at = {AGO.format('$2')} WHERE event_id = $1",
                delivery.event.event_id,
                age_s,
            )

    await prune_once(pool, retaining(settings), COMMON_RULES)

    assert await apply_committed(pool, [within], effect_of([])) == ["duplicate"]
    assert await effects(pool) == [1, 2]
    # The forgotten one would be applied again: the retention is what keeps that from
    # happening within the window a redelivery can come in.
    assert await apply_committed(pool, [past], effect_of([])) == ["applied"]
    assert await effects(pool) == [1, 2, 2]


async def add_record(
    conn: asyncpg.Connection,
    status: str,
    age_s: float,
    reason: str | None = None,
    synced_before: bool = False,
) -> UUID:
    """A bridge record of the actuals map with a payload, last sent (and, when synced,
    synced) `age_s` ago. `synced_before`: a record synced once and since sent again (its
    `synced_at` stays, as `set_record_status` keeps it)."""
    record_id = uuid4()
    at = AGO.format("$9")
    synced_at = at if status == "synced" or synced_before else "NULL"
    await conn.execute(
        "INSERT INTO bridge_record (record_id, map_name, leg_name, source_topic, "
        "source_event_id, record_key, target_topic, status, reason, source_record, payload, "
        f"last_sent_at, synced_at) VALUES ($1, $2, 'actuals', 'actuals-created', $3, $4, "
        f"'fo-actuals-staging', $5, $6, $7::jsonb, $8::jsonb, {at}, {synced_at})",
        record_id,
        ACTUALS_MAP_NAME,
        uuid4(),
        str(record_id),
        status,
        reason,
        json.dumps({"msdyn_actualid": str(record_id)}),
        json.dumps({"ACTUALID": str(record_id), "AMOUNT": "1600.00"}),
        age_s,
    )
    return record_id


async def payloads(pool: asyncpg.Pool) -> dict[UUID, Any]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT record_id, payload, source_record FROM bridge_record")
    assert all(r["source_record"] is not None for r in rows)  # never pruned
    return {r["record_id"]: r["payload"] for r in rows}


async def test_bridge_prunes_synced_payloads_and_old_activity_but_keeps_what_is_still_needed(
    bridge_pool: asyncpg.Pool, settings: Settings
) -> None:
    """Proves that the bridge drops the payload of records synced before the retention and the
    activity log entries older than it, and keeps: the payload of a recently synced record,
    and of every pending, failed or queued record however old (a re-drive, a retry or the
    paused queue still sends or weighs it), every record row and source record, and recent
    activity. A record synced once and pending again keeps its payload too."""
    async with bridge_pool.acquire() as conn:
        old_synced = {await add_record(conn, "synced", OLD) for _ in range(3)}
        kept = {
            await add_record(conn, "synced", YOUNG),
            await add_record(conn, "pending", OLD),
            await add_record(conn, "failed", OLD, reason="target unavailable"),
            await add_record(conn, "queued", OLD),
            await add_record(conn, "pending", OLD, synced_before=True),
        }
        for age_s in (OLD, OLD, OLD, YOUNG):
            await conn.execute(
                "INSERT INTO bridge_activity (map_name, kind, message, at) "
                f"VALUES ($1, 'redrive', 'records re-sent', {AGO.format('$2')})",
                ACTUALS_MAP_NAME,
                age_s,
            )
        activity_before = await conn.fetchval("SELECT count(*) FROM bridge_activity")

    pruned = await prune_once(bridge_pool, retaining(settings), BRIDGE_PRUNE_RULES)

    assert pruned["bridge_synced_payloads"] == 3
    assert pruned["bridge_activity"] == 3
    after = await payloads(bridge_pool)
    assert set(after) == old_synced | kept
    assert {r for r, p in after.items() if p is None} == old_synced
    assert all(after[r] is not None for r in kept)
    async with bridge_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM bridge_activity") == activity_before - 3
        oldest_kept = await conn.fetchval(
            f"SELECT min(at) < {AGO.format('$1')} FROM bridge_activity", RETENTION_S
        )
        assert oldest_kept is False


async def test_the_retention_worker_prunes_on_its_own_and_stops(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """Proves that the worker every service runs prunes without being asked (and again at
    each interval), and ends promptly when stopped."""
    worker = RetentionWorker(pool, retaining(settings, retention_interval_s=0.1))
    task = asyncio.create_task(worker.run())
    try:
        first = await add_outbox_rows(pool, 3, OLD)

        async def gone() -> bool:
            return (await ids_in(pool, "dwsim_outbox")).isdisjoint(first)

        await wait_for(gone, 10, "the worker to prune the first old rows")
        second = await add_outbox_rows(pool, 3, OLD)

        async def gone_too() -> bool:
            # The rows are gone at the worker's commit; its tally follows when its task takes
            # the answer, which may come after this poll (seen once in a full run).
            rows_gone = (await ids_in(pool, "dwsim_outbox")).isdisjoint(second)
            return rows_gone and worker.pruned["outbox_published"] >= 6

        await wait_for(gone_too, 10, "the worker to prune again at its next interval")
        assert worker.pruned["outbox_published"] == 6
    finally:
        worker.stop()
        await asyncio.wait_for(task, 5)
