"""Inbox and consumer loop: validate, apply with the event id in one transaction, then commit.

Every service consumes through `InboxConsumer`:
- a message that does not validate goes to `<topic>.dlq` with the reason and its bytes;
- a valid event is applied by its handler in the same transaction that records its event id,
  so a redelivered event (a crash before the offset commit, a rebalance, a re-drive) is
  acknowledged and skipped;
- a handler that raises parks the event with its reason in `dwsim_parked_event`, where it can
  be read and retried, and the loop goes on;
- offsets are committed only after the transaction commits.
A fetched batch is applied in one transaction, each event inside its own savepoint.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from pydantic import BaseModel, ValidationError

from schemas.envelope import Envelope
from schemas.receipts import DeadLetter
from schemas.topics import dlq_name
from services.common.db import TRANSIENT_DATABASE_ERRORS, DbConnection
from services.common.kafka import make_consumer, make_producer
from services.common.logging import correlation, get_logger
from services.common.parking import park, retry_parked
from services.common.settings import Settings

log = get_logger(__name__)

Handler = Callable[[DbConnection, Envelope[Any]], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    """One topic a consumer reads: its payload model and the handler that applies it."""

    topic: str
    payload_model: type[BaseModel]
    handler: Handler


@dataclass
class ConsumerStats:
    """Counters a health page shows."""

    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    parked: int = 0
    last_error: str | None = None
    assigned: list[str] = field(default_factory=list)


def parse_event(value: bytes | None, model: type[BaseModel]) -> Envelope[Any]:
    """Validate raw bytes into an envelope with a typed payload; raises ValidationError."""
    typed: Envelope[Any] = Envelope[model].model_validate_json(value or b"")  # type: ignore[valid-type]
    return typed


def describe_validation_error(exc: ValidationError) -> str:
    """A short reason naming each bad field."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(message)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


async def apply_once(
    conn: DbConnection,
    event: Envelope[Any],
    topic: str,
    key: str | None,
    value: bytes,
    handler: Handler,
) -> str:
    """Apply an event once, inside the caller's transaction: "applied", "duplicate" or "parked".

    The event id goes into the inbox with the effect; a repeat fails on the key and is skipped.
    A handler failure is rolled back to a savepoint and the event parked with its reason; a
    transient database failure is raised so the whole batch is retried.
    """
    with correlation(event.correlation_id, event_type=event.event_type):
        inserted = await conn.fetchval(
            "INSERT INTO dwsim_inbox (event_id, topic, event_type, correlation_id) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true",
            event.event_id,
            topic,
            event.event_type,
            event.correlation_id,
        )
        if not inserted:
            log.debug("event_duplicate_skipped", event_id=str(event.event_id))
            return "duplicate"
        try:
            async with conn.transaction():
                await handler(conn, event)
            return "applied"
        except TRANSIENT_DATABASE_ERRORS:
            raise
        except Exception as exc:  # a failing event must not take the loop down
            reason = f"{type(exc).__name__}: {exc}"
            log.error("event_parked", event_id=str(event.event_id), reason=reason)
            await park(conn, event, topic, key, value, reason)
            return "parked"


def dead_letter(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, reason: str
) -> DeadLetter:
    """The `.dlq` record of a message that failed validation."""
    return DeadLetter(
        topic=topic,
        partition=partition,
        offset=offset,
        key=key.decode(errors="replace") if key else None,
        reason=reason,
        value=(value or b"").decode(errors="replace"),
    )


class InboxConsumer:
    """Consumes a set of topics in one consumer group; see the module docstring."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        group_id: str,
        subscriptions: list[Subscription],
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._group_id = group_id
        self._subs = {s.topic: s for s in subscriptions}
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq_producer: AIOKafkaProducer | None = None
        self.stats = ConsumerStats()

    def stop(self) -> None:
        """Finish the batch in hand, then return from `run`."""
        self._stopping.set()

    async def run(self) -> None:
        """Consume until stopped."""
        self._consumer = make_consumer(self._settings, self._group_id, *self._subs)
        await self._consumer.start()
        backoff = 0.1
        try:
            while not self._stopping.is_set():
                batch = await self._consumer.getmany(timeout_ms=200)
                self.stats.assigned = sorted(
                    f"{tp.topic}:{tp.partition}" for tp in self._consumer.assignment()
                )
                if not batch:
                    continue
                try:
                    await self._process(batch)
                    backoff = 0.1
                    self.stats.last_error = None
                except (*TRANSIENT_DATABASE_ERRORS, KafkaError, asyncpg.PostgresError) as exc:
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning(
                        "consumer_batch_failed",
                        group=self._group_id,
                        error=self.stats.last_error,
                        retry_in=backoff,
                    )
                    for tp, messages in batch.items():
                        self._consumer.seek(tp, messages[0].offset)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
            if self._dlq_producer is not None:
                with contextlib.suppress(Exception):
                    await self._dlq_producer.stop()

    async def _process(self, batch: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> None:
        assert self._consumer is not None
        dead: list[tuple[ConsumerRecord[Any, Any], str]] = []
        applied = duplicates = parked = 0
        async with self._pool.acquire() as conn, conn.transaction():
            for messages in batch.values():
                for msg in messages:
                    sub = self._subs[msg.topic]
                    try:
                        event = parse_event(msg.value, sub.payload_model)
                    except ValidationError as exc:
                        dead.append((msg, describe_validation_error(exc)))
                        continue
                    outcome = await self._apply(conn, sub, msg, event)
                    applied += outcome == "applied"
                    duplicates += outcome == "duplicate"
                    parked += outcome == "parked"
        # Dead letters go out before the offsets move on, so none is lost to a crash here.
        for msg, reason in dead:
            await self._dead_letter(msg, reason)
        await self._commit_offsets({tp: ms[-1].offset + 1 for tp, ms in batch.items()})
        self.stats.applied += applied
        self.stats.duplicates += duplicates
        self.stats.parked += parked
        self.stats.dead_lettered += len(dead)

    async def _commit_offsets(self, offsets: dict[TopicPartition, int]) -> None:
        assert self._consumer is not None
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError as exc:
            # A rebalance took the partitions; the next owner re-reads and its inbox skips.
            log.info("offset_commit_lost_to_rebalance", group=self._group_id, error=str(exc))

    async def _apply(
        self,
        conn: DbConnection,
        sub: Subscription,
        msg: ConsumerRecord[Any, Any],
        event: Envelope[Any],
    ) -> str:
        key = msg.key.decode(errors="replace") if msg.key else None
        return await apply_once(conn, event, msg.topic, key, msg.value or b"", sub.handler)

    async def _dead_letter(self, msg: ConsumerRecord[Any, Any], reason: str) -> None:
        if self._dlq_producer is None:
            self._dlq_producer = make_producer(self._settings, f"{self._group_id}-dlq")
            await self._dlq_producer.start()
        letter = dead_letter(msg.topic, msg.partition, msg.offset, msg.key, msg.value, reason)
        await self._dlq_producer.send_and_wait(
            dlq_name(msg.topic),
            value=letter.model_dump_json().encode(),
            key=msg.key,
            headers=[("reason", reason.encode()[:1000])],
        )
        log.warning("event_dead_lettered", topic=msg.topic, offset=msg.offset, reason=reason)

    async def retry_parked(self, event_id: UUID) -> bool:
        """Apply a parked event again; True when it applied and left the parked list."""

        async def apply(conn: DbConnection, row: asyncpg.Record) -> None:
            sub = self._subs[row["topic"]]
            await sub.handler(conn, parse_event(row["value"], sub.payload_model))

        return await retry_parked(self._pool, event_id, apply)
