"""Transactional outbox: events written with the change, published by a relay in commit order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Final, TypeVar

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import BaseModel

from schemas.envelope import Envelope
from services.common.backoff import Backoff
from services.common.db import (
    TRANSIENT_DATABASE_ERRORS,
    DbConnection,
    database_status,
    session_alive,
    session_connection,
)
from services.common.kafka import make_producer
from services.common.logging import get_logger
from services.common.settings import Settings

log = get_logger(__name__)

NOTIFY_CHANNEL = "dwsim_outbox"
# One relay per database publishes at a time (session lock), so two processes of the same
# service cannot interleave their batches and reorder a key's events.
_RELAY_LEADER_LOCK = 7_261_003
# Subscripted once: pydantic looks a parametrised generic up on every subscript.
_ANY_ENVELOPE: Final = Envelope[Any]

T = TypeVar("T")


async def add(
    conn: DbConnection,
    topic: str,
    key: str | None,
    event: Envelope[Any],
) -> None:
    """Record `event` for `topic` inside the caller's open transaction."""
    if not conn.is_in_transaction():
        raise RuntimeError("outbox.add must run inside the transaction of the change")
    # One round trip: the row and the relay's wake-up (delivered at commit) together.
    await conn.execute(
        "WITH added AS ("
        "INSERT INTO dwsim_outbox (event_id, topic, key, event_type, correlation_id, value) "
        "VALUES ($1, $2, $3, $4, $5, $6) RETURNING id) "
        "SELECT pg_notify($7, '') FROM added",
        event.event_id,
        topic,
        key,
        event.event_type,
        event.correlation_id,
        event.model_dump_json().encode(),
        NOTIFY_CHANNEL,
    )


async def add_many(conn: DbConnection, rows: list[tuple[str, str | None, Envelope[Any]]]) -> None:
    """Record several events at once (topic, key, event), in list order, in one statement."""
    if not rows:
        return
    if not conn.is_in_transaction():
        raise RuntimeError("outbox.add_many must run inside the transaction of the change")
    await conn.execute(
        "WITH added AS ("
        "INSERT INTO dwsim_outbox (event_id, topic, key, event_type, correlation_id, value) "
        "SELECT r.event_id, r.topic, r.key, r.event_type, r.correlation_id, r.value "
        "FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[]) "
        "WITH ORDINALITY AS r(event_id, topic, key, event_type, correlation_id, value, ord) "
        "ORDER BY r.ord RETURNING 1) "
        "SELECT pg_notify($7, '') WHERE EXISTS (SELECT FROM added)",
        [e.event_id for _, _, e in rows],
        [t for t, _, _ in rows],
        [k for _, k, _ in rows],
        [e.event_type for _, _, e in rows],
        [e.correlation_id for _, _, e in rows],
        [e.model_dump_json().encode() for _, _, e in rows],
        NOTIFY_CHANNEL,
    )


def consecutive_runs(
    items: Iterable[T], group_of: Callable[[T], Hashable], limit: int
) -> list[list[T]]:
    """Split `items` into runs of consecutive items of one group, at most `limit` each.

    What a message that carries several records is made of: each run becomes one message
    keyed by its group, so the messages keep the items' order and every item of one key
    travels on one partition, in order.
    """
    runs: list[list[T]] = []
    last: Hashable = None
    for item in items:
        group = group_of(item)
        if not runs or group != last or len(runs[-1]) >= limit:
            runs.append([])
            last = group
        runs[-1].append(item)
    return runs


def envelope(
    event_type: str,
    source: str,
    payload: BaseModel,
    correlation_id: str | None = None,
    causation_id: Any = None,
) -> Envelope[Any]:
    """Wrap a payload in a new envelope."""
    return _ANY_ENVELOPE(
        event_type=event_type,
        source=source,
        payload=payload,
        correlation_id=correlation_id,
        causation_id=causation_id,
    )


async def unpublished_count(conn: DbConnection) -> int:
    """Rows waiting for the relay."""
    count: int = await conn.fetchval("SELECT count(*) FROM dwsim_outbox WHERE published_at IS NULL")
    return count


class OutboxRelay:
    """Publishes unpublished outbox rows in id (= commit) order and marks them published.

    A batch is published and then marked in one transaction that holds its rows locked; a
    crash between publish and mark re-publishes the batch (consumers' inboxes drop the
    repeats), it never loses a row. While the broker is away the relay retries with
    exponential backoff, capped by `relay_max_backoff_s`; while the database is, capped by
    `database_retry_max_backoff_s`, and it is leader again before it publishes.
    """

    def __init__(self, pool: asyncpg.Pool, settings: Settings, name: str) -> None:
        self._pool = pool
        self._settings = settings
        self._name = name
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.published = 0
        self.polls = 0
        self.last_error: str | None = None
        self._database = database_status(pool)
        self._database_backoff = Backoff(settings.database_retry_max_backoff_s)

    def stop(self) -> None:
        """Ask the relay to finish its current batch and return."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Relay until stopped; a lost database is waited out, never fatal.

        The leader session (advisory lock and LISTEN) ends with its connection, and the lock
        with it: another process's relay may hold it by the time the database is back. So
        after a lost connection the relay opens a new session and is leader again before it
        publishes anything, and it never publishes on a session it has lost.
        """
        while not self._stopping.is_set():
            try:
                # The leader lock and LISTEN end with the session: the connection is closed after.
                async with session_connection(self._pool) as leader:
                    # Holding the leader lock for the session's life; a second relay waits here.
                    while not await leader.fetchval(
                        "SELECT pg_try_advisory_lock($1)", _RELAY_LEADER_LOCK
                    ):
                        self._database.reachable()
                        if await self._sleep(1.0):
                            return
                    await leader.add_listener(NOTIFY_CHANNEL, self._on_notify)
                    self._database.reachable()
                    if await self._relay_loop(leader):
                        return
            except TRANSIENT_DATABASE_ERRORS as exc:
                if await self._database_lost(exc):
                    return

    async def _database_lost(self, exc: BaseException) -> bool:
        """Record a lost or refused connection and back off; True when stopping."""
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._database.failed(exc, "outbox relay")
        delay = self._database_backoff.next_delay()
        log.warning("outbox_database_unavailable", error=self.last_error, retry_in=round(delay, 2))
        return await self._sleep(delay)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _sleep(self, seconds: float) -> bool:
        """Wait for a wake-up or the timeout; True when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()
        return self._stopping.is_set()

    async def _relay_loop(self, leader: DbConnection) -> bool:
        """Publish while the leader session lasts: True when stopping, False when the session
        was lost (the caller becomes leader again first)."""
        broker_backoff = Backoff(self._settings.relay_max_backoff_s)
        producer: AIOKafkaProducer | None = None
        try:
            while not self._stopping.is_set():
                if not session_alive(leader):
                    log.warning("outbox_leader_session_lost")
                    return False
                try:
                    if producer is None:
                        producer = make_producer(self._settings, f"{self._name}-relay")
                        await producer.start()
                    sent = await self._publish_batch(producer)
                    broker_backoff.reset()
                    self._database_backoff.reset()
                    self._database.reachable()
                    self.last_error = None
                    if sent == 0 and await self._sleep(self._settings.relay_idle_interval_s):
                        return True
                except (TimeoutError, KafkaError) as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    retry_in = broker_backoff.next_delay()
                    log.warning("outbox_publish_failed", error=self.last_error, retry_in=retry_in)
                    if producer is not None:
                        with contextlib.suppress(Exception):
                            await producer.stop()
                        producer = None
                    if await self._sleep(retry_in):
                        return True
                except TRANSIENT_DATABASE_ERRORS as exc:
                    # The batch's transaction rolled back: its rows are published again (the
                    # consumers' inboxes drop what the broker already had), never lost.
                    if not session_alive(leader):
                        # Backing off is the caller's, which must reconnect anyway.
                        self.last_error = f"{type(exc).__name__}: {exc}"
                        self._database.failed(exc, "outbox relay")
                        return False
                    if await self._database_lost(exc):
                        return True
        finally:
            if producer is not None:
                with contextlib.suppress(Exception):
                    await producer.stop()
        return True

    async def _publish_batch(self, producer: AIOKafkaProducer) -> int:
        self.polls += 1
        async with self._pool.acquire() as conn, conn.transaction():
            # Ids are handed out at insert, not at commit: a transaction still running may yet
            # commit a row with a smaller id than rows already visible. Only rows written by
            # transactions older than every running one (xid below the snapshot's xmin) are
            # taken, so no row is ever passed over and ids are published in order. Writers of
            # one record hold its row lock, so a record's events get ids in commit order.
            rows = await conn.fetch(
                "SELECT id, topic, key, value, event_type, correlation_id FROM dwsim_outbox "
                "WHERE published_at IS NULL "
                "AND xid < pg_snapshot_xmin(pg_current_snapshot()) "
                "ORDER BY id LIMIT $1 FOR UPDATE",
                self._settings.relay_batch_size,
            )
            if not rows:
                return 0
            # aiokafka keeps one request in flight per partition, so sends of one key
            # (one partition) reach the broker in the order they are queued here.
            futures = [
                await producer.send(
                    r["topic"],
                    value=r["value"],
                    key=r["key"].encode() if r["key"] is not None else None,
                    headers=[("event_type", r["event_type"].encode())],
                )
                for r in rows
            ]
            await asyncio.wait_for(asyncio.gather(*futures), timeout=30)
            await conn.execute(
                "UPDATE dwsim_outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
                [r["id"] for r in rows],
            )
        self.published += len(rows)
        return len(rows)
