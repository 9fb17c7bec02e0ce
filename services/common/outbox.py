"""Transactional outbox: events written with the change, published by a relay in commit order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Final, TypeVar
from uuid import UUID

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from pydantic import BaseModel

from schemas.envelope import Envelope
from services.common import tracing
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
    await tracing.resume(conn, [event.correlation_id])
    # One round trip: the row and the relay's wake-up (delivered at commit) together.
    await conn.execute(
        "WITH added AS ("
        "INSERT INTO dwsim_outbox "
        "(event_id, topic, key, event_type, correlation_id, value, traceparent) "
        "VALUES ($1, $2, $3, $4, $5, $6, $8) RETURNING id) "
        "SELECT pg_notify($7, '') FROM added",
        event.event_id,
        topic,
        key,
        event.event_type,
        event.correlation_id,
        event.model_dump_json().encode(),
        NOTIFY_CHANNEL,
        tracing.traceparent_for(event.correlation_id),
    )


async def add_many(
    conn: DbConnection, rows: Iterable[tuple[str, str | None, Envelope[Any]]]
) -> None:
    """Record several events at once (topic, key, event), in order, in one statement.

    `rows` is read once, and each event is encoded as it is read: given a generator, only one
    event's model is alive at a time. A 50,000-line confirmation's 200 `actuals-created`
    events held as models at once were 3 KB per actual, more than their encoded bytes.
    """
    if not conn.is_in_transaction():
        raise RuntimeError("outbox.add_many must run inside the transaction of the change")
    event_ids: list[UUID] = []
    topics: list[str] = []
    keys: list[str | None] = []
    event_types: list[str] = []
    correlation_ids: list[str | None] = []
    values: list[bytes] = []
    for topic, key, event in rows:
        event_ids.append(event.event_id)
        topics.append(topic)
        keys.append(key)
        event_types.append(event.event_type)
        correlation_ids.append(event.correlation_id)
        values.append(event.model_dump_json().encode())
    if not event_ids:
        return
    await tracing.resume(conn, correlation_ids)
    await conn.execute(
        "WITH added AS ("
        "INSERT INTO dwsim_outbox "
        "(event_id, topic, key, event_type, correlation_id, value, traceparent) "
        "SELECT r.event_id, r.topic, r.key, r.event_type, r.correlation_id, r.value, "
        "r.traceparent "
        "FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], "
        "$8::text[]) "
        "WITH ORDINALITY AS "
        "r(event_id, topic, key, event_type, correlation_id, value, traceparent, ord) "
        "ORDER BY r.ord RETURNING 1) "
        "SELECT pg_notify($7, '') WHERE EXISTS (SELECT FROM added)",
        event_ids,
        topics,
        keys,
        event_types,
        correlation_ids,
        values,
        NOTIFY_CHANNEL,
        [tracing.traceparent_for(c) for c in correlation_ids],
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
                "SELECT id, event_id, topic, key, value, event_type, correlation_id, traceparent "
                "FROM dwsim_outbox "
                "WHERE published_at IS NULL "
                "AND xid < pg_snapshot_xmin(pg_current_snapshot()) "
                "ORDER BY id LIMIT $1 FOR UPDATE",
                self._settings.relay_batch_size,
            )
            if not rows:
                return 0
            sendable, too_large = _split_by_size(rows, self._settings.max_message_bytes)
            await park_rows(conn, too_large)
            try:
                await _send_in_order(producer, sendable)
            except MessageSizeTooLargeError:
                # The broker refused a request: its own limit is below max_message_bytes.
                # Sent again one row at a time, in order, a row the broker refuses alone is
                # parked instead of failing the batch forever; rows the failed attempt
                # published go out twice, and the consumers' inboxes drop the repeats. Order
                # holds for a refused row travelling alone; a request that also carried
                # smaller rows may have been overtaken by later rows of their key, which is
                # why max_message_bytes should not exceed the broker's limit: then the relay
                # refuses first, above.
                refused = await _send_one_by_one(producer, sendable)
                await park_rows(conn, refused)
                gone = {row["id"] for row, _, _ in refused}
                sendable = [r for r in sendable if r["id"] not in gone]
            await conn.execute(
                "UPDATE dwsim_outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
                [r["id"] for r in sendable],
            )
        self.published += len(sendable)
        return len(rows)


# Parked rows: (row, bytes on the wire, reason).
_Refusal = tuple[asyncpg.Record, int, str]


def _wire(row: asyncpg.Record) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """Key, value and headers of a row as the relay sends it."""
    key = row["key"].encode() if row["key"] is not None else None
    headers = [("event_type", row["event_type"].encode())]
    if row["traceparent"] is not None:  # rows written before migration 005 have none
        headers.append((tracing.HEADER, row["traceparent"].encode()))
    return key, row["value"], headers


def wire_size(row: asyncpg.Record) -> int:
    """A row's size as the producer counts it against its max_request_size."""
    size: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(*_wire(row))
    return size


def _split_by_size(
    rows: list[asyncpg.Record], max_bytes: int
) -> tuple[list[asyncpg.Record], list[_Refusal]]:
    """The rows to send, and those the producer would refuse, with the reason."""
    sendable: list[asyncpg.Record] = []
    too_large: list[_Refusal] = []
    for row in rows:
        size = wire_size(row)
        if size > max_bytes:
            reason = (
                f"message too large: {size} bytes, over the limit of {max_bytes} "
                "(max_message_bytes); it can never be published"
            )
            too_large.append((row, size, reason))
        else:
            sendable.append(row)
    return sendable, too_large


async def _send_in_order(producer: AIOKafkaProducer, rows: list[asyncpg.Record]) -> None:
    # aiokafka keeps one request in flight per partition, so sends of one key
    # (one partition) reach the broker in the order they are queued here.
    futures = []
    for row in rows:
        key, value, headers = _wire(row)
        futures.append(await producer.send(row["topic"], value=value, key=key, headers=headers))
    results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), timeout=30)
    failures = [r for r in results if isinstance(r, BaseException)]
    # Anything but a size refusal is retried with the whole batch, as before.
    for failure in failures:
        if not isinstance(failure, MessageSizeTooLargeError):
            raise failure
    if failures:
        raise failures[0]


async def _send_one_by_one(
    producer: AIOKafkaProducer, rows: list[asyncpg.Record]
) -> list[_Refusal]:
    """Send each row alone and wait for it; the rows the broker refuses, with its reason."""
    refused: list[_Refusal] = []
    for row in rows:
        key, value, headers = _wire(row)
        try:
            await asyncio.wait_for(
                producer.send_and_wait(row["topic"], value=value, key=key, headers=headers), 30
            )
        except MessageSizeTooLargeError as exc:
            reason = f"refused by the broker: {exc}"
            refused.append((row, wire_size(row), reason))
    return refused


async def park_rows(conn: DbConnection, refusals: list[_Refusal]) -> None:
    """Move rows that can never be published to `dwsim_outbox_parked`, with their reason,
    inside the relay's transaction (the rows are locked by it)."""
    for row, size, reason in refusals:
        log.error(
            "outbox_row_parked",
            event_id=str(row["event_id"]),
            topic=row["topic"],
            size=size,
            reason=reason,
        )
    if not refusals:
        return
    await conn.execute(
        "WITH moved AS (DELETE FROM dwsim_outbox WHERE id = ANY($1::bigint[]) RETURNING *) "
        "INSERT INTO dwsim_outbox_parked "
        "(id, event_id, topic, key, event_type, correlation_id, value, size, reason, created_at, "
        "traceparent) "
        "SELECT m.id, m.event_id, m.topic, m.key, m.event_type, m.correlation_id, m.value, "
        "r.size, r.reason, m.created_at, m.traceparent "
        "FROM moved m JOIN unnest($1::bigint[], $2::integer[], $3::text[]) AS r(id, size, reason) "
        "ON r.id = m.id",
        [row["id"] for row, _, _ in refusals],
        [size for _, size, _ in refusals],
        [reason for _, _, reason in refusals],
    )


async def parked_rows(conn: DbConnection) -> list[dict[str, Any]]:
    """Outbox rows parked because they can never be published, oldest first, without values."""
    rows = await conn.fetch(
        "SELECT id, event_id, topic, key, event_type, correlation_id, size, reason, "
        "created_at, parked_at FROM dwsim_outbox_parked ORDER BY id"
    )
    return [dict(r) for r in rows]
