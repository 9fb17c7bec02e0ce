"""The outbox relay and the inbox consumer outlive a PostgreSQL crash in the middle of their
work, and carry on when it is back: nothing lost, nothing applied twice.

Regression tests of issue 18, item 2. The crash is made to land inside a worker's statement:
the test holds row locks that the statement waits for, and crashes the server while it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from services.common import outbox
from services.common.db import database_status
from services.common.inbox import InboxConsumer, Subscription
from services.common.kafka import make_producer
from services.common.outbox import OutboxRelay
from services.common.settings import Settings
from services.simulator.faults import (
    POSTGRES_CRASHES,
    PostgresCrash,
    crash_postgres,
    start_postgres_again,
)
from tests.integration.delivery_fixtures import (
    Ping,
    add_ping,
    effects,
    open_service_pool,
    record_effect,
)
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        bool(os.environ.get("DWSIM_DATABASE_URL")),
        reason="needs the local PostgreSQL: a configured server is not ours to crash",
    ),
]

# The relay's leader lock (services/common/outbox.py).
RELAY_LEADER_LOCK = 7_261_003
Statement = tuple[str, tuple[object, ...]]


@contextlib.asynccontextmanager
async def running(
    *workers: OutboxRelay | InboxConsumer,
) -> AsyncIterator[list[asyncio.Task[None]]]:
    """Run the workers as tasks for the block; stop them after and await their end."""
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield tasks
    finally:
        for w in workers:
            w.stop()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)


@pytest.fixture
async def pools(settings: Settings) -> AsyncIterator[tuple[asyncpg.Pool, asyncpg.Pool]]:
    """Producer side on the dataverse database, consumer side on the finance database."""
    source = await open_service_pool(settings, "dataverse")
    target = await open_service_pool(settings, "finance")
    yield source, target
    await source.close()
    await target.close()


def consumer_of(settings: Settings, pool: asyncpg.Pool, topic: str) -> InboxConsumer:
    return InboxConsumer(
        pool, settings, f"{topic}-group", [Subscription(topic, Ping, record_effect)]
    )


@contextlib.asynccontextmanager
async def holding(
    settings: Settings, service: str, hold: list[Statement]
) -> AsyncIterator[asyncpg.Connection]:
    """Run `hold` in a transaction of the test's own and keep it open for the block."""
    holder = await asyncpg.connect(settings.service_database_url(service))
    try:
        await holder.execute("BEGIN")
        for sql, args in hold:
            await holder.execute(sql, *args)
        yield holder
    finally:
        holder.terminate()


async def crash_when_blocked(
    holder: asyncpg.Connection, settings: Settings, what: str, crash: PostgresCrash
) -> tuple[int, int]:
    """Wait until another session of the database waits for the holder's locks (`what`: whose
    statement), then crash PostgreSQL: the crash lands in the middle of that statement."""

    async def blocked() -> bool:
        # asyncpg's statements are prepared, and pg_stat_activity may show no text for them:
        # the worker under test is the only other session that could wait on a lock here.
        waiting: int = await holder.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        return waiting > 0

    await wait_for(blocked, 20, f"{what} to wait for the test's lock")
    return crash_postgres(settings, crash)


async def when_back(
    pool: asyncpg.Pool, work: Callable[[asyncpg.Connection], Awaitable[None]]
) -> None:
    """Run `work` in a transaction once the pool reaches the database again."""

    async def done() -> bool:
        try:
            async with pool.acquire() as conn, conn.transaction():
                await work(conn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        return True

    await wait_for(done, 30, "the database to take the test's writes again")


def all_applied_once(
    pool: asyncpg.Pool, n: int, tasks: list[asyncio.Task[None]]
) -> Callable[[], Awaitable[bool]]:
    """Every effect 0..n-1 exactly once; fails at once if a worker ended (which would have
    taken its service process down)."""

    async def check() -> bool:
        for task in tasks:
            if task.done():
                raise AssertionError(f"a worker ended: {task.exception()!r}")
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return sorted(await effects(pool)) == list(range(n))
        return False

    return check


@pytest.mark.parametrize("crash", POSTGRES_CRASHES)
async def test_relay_survives_postgresql_crash_mid_batch_and_leads_again(
    settings: Settings, pools: tuple[asyncpg.Pool, asyncpg.Pool], crash: PostgresCrash
) -> None:
    source, target = pools
    topic = f"{settings.topic_prefix}invoice-confirmed"
    async with source.acquire() as conn, conn.transaction():
        for n in range(10):
            await add_ping(conn, topic, n)
    # The relay's batch (SELECT ... FOR UPDATE) will wait on the rows the test holds.
    hold: list[Statement] = [("SELECT id FROM dwsim_outbox FOR UPDATE", ())]
    async with (
        holding(settings, "dataverse", hold) as holder,
        running(
            OutboxRelay(source, settings, "src"), consumer_of(settings, target, topic)
        ) as tasks,
    ):
        old_pid, port = await crash_when_blocked(holder, settings, "the relay's batch", crash)
        await start_postgres_again(settings, old_pid, port)

        async def ten_more(conn: asyncpg.Connection) -> None:
            for n in range(10, 20):
                await add_ping(conn, topic, n)

        await when_back(source, ten_more)
        await wait_for(all_applied_once(target, 20, tasks), 60, "20 effects, each once")
        # Leader again: the new session holds the advisory lock.
        async with source.acquire() as conn:
            leaders = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND objid = $1 AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())",
                RELAY_LEADER_LOCK,
            )
        assert leaders == 1
    status = database_status(source)
    assert status.up and status.outages >= 1, status.as_dict()


@pytest.mark.parametrize("crash", POSTGRES_CRASHES)
async def test_inbox_consumer_survives_postgresql_crash_mid_transaction(
    settings: Settings, pools: tuple[asyncpg.Pool, asyncpg.Pool], crash: PostgresCrash
) -> None:
    _, target = pools
    topic = f"{settings.topic_prefix}invoice-confirmed"
    events = [outbox.envelope("ping", "test", Ping(n=n), f"inv-{n}") for n in range(20)]
    consumer = consumer_of(settings, target, topic)
    producer = make_producer(settings, "test-pings")
    await producer.start()
    try:
        # The first event's inbox row, not committed: the consumer's inbox insert will wait.
        hold: list[Statement] = [
            (
                "INSERT INTO dwsim_inbox (event_id, topic, event_type) VALUES ($1, $2, $3)",
                (events[0].event_id, topic, "ping"),
            )
        ]
        async with holding(settings, "finance", hold) as holder, running(consumer) as tasks:
            for event in events[:10]:
                await producer.send_and_wait(topic, event.model_dump_json().encode(), key=b"k")
            old_pid, port = await crash_when_blocked(
                holder, settings, "the consumer's inbox insert", crash
            )
            await start_postgres_again(settings, old_pid, port)
            for event in events[10:]:
                await producer.send_and_wait(topic, event.model_dump_json().encode(), key=b"k")
            await wait_for(all_applied_once(target, 20, tasks), 60, "20 effects, each once")
    finally:
        await producer.stop()
    assert consumer.stats.parked == 0 and consumer.stats.dead_lettered == 0
    status = database_status(target)
    assert status.up and status.outages >= 1, status.as_dict()
