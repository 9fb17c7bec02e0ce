"""Inbox and consumer loop: validate, apply with the event id in one transaction, then commit.

Every consumer of dwsim applies what it fetched through `apply_messages`: the services' plain
`InboxConsumer` below and the bridge's faust agents (services/bridge/stream_app.py) alike, so
both deliver the same way (tests/integration/test_delivery_contract.py runs one set of cases
against each):
- a message larger than `max_message_bytes`, or that does not validate, becomes a dead letter
  for `<topic>.dlq` with the reason and its bytes (as much as fits, see dead_letters.py), which
  the consumer sends before it acknowledges the message;
- a valid event is applied by its handler in the same transaction that records its event id,
  so a redelivered event (a crash before the offset commit, a rebalance, a re-drive) is
  acknowledged and skipped;
- a handler that raises parks the event with its reason in `dwsim_parked_event`, where it can
  be read and retried (`retry_parked_delivery`), and the others go on;
- offsets are committed (faust: events acked) only after the transaction commits.
A fetched batch is applied in one transaction: one inbox statement, and the new events applied
together (one savepoint); only when that fails are they applied one by one to park the culprits.
`InboxConsumer` also isolates a batch that fails anyway for a reason other than an outage
(parking itself failed, say): it is halved until the message that fails is alone, and that one
is dead-lettered. The bridge's agents instead stop the process on such a failure, before any
offset moves (see stream_app.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from pydantic import BaseModel, ValidationError

from schemas.envelope import Envelope, envelope_of
from schemas.receipts import DeadLetter
from services.common.backoff import Backoff
from services.common.db import (
    TRANSIENT_DATABASE_ERRORS,
    DbConnection,
    database_status,
    is_transient,
)
from services.common.dead_letters import (
    dead_letter,
    is_outage,
    send_dead_letter,
    too_large_reason,
)
from services.common.errors import ConsumerNotReady
from services.common.kafka import make_consumer, make_producer
from services.common.logging import correlation, get_logger
from services.common.parking import park, retry_parked
from services.common.settings import Settings
from services.common.tracing import TraceContext, for_events, from_headers

log = get_logger(__name__)

Handler = Callable[[DbConnection, Envelope[Any]], Awaitable[None]]


@dataclass(frozen=True)
class Delivery:
    """A validated event as it arrived: what the handlers, the inbox and parking need."""

    event: Envelope[Any]
    topic: str
    key: str | None
    value: bytes
    # The `traceparent` the message arrived with: the handler's work continues that trace.
    trace: TraceContext | None = None


ApplyOne = Callable[[DbConnection, Delivery], Awaitable[None]]
ApplyMany = Callable[[DbConnection, list[Delivery]], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    """One topic a consumer reads: its payload model and the handler that applies it."""

    topic: str
    payload_model: type[BaseModel]
    handler: Handler | None = None
    # Applies a fetched batch of the topic's new events at once (bulk statements); when
    # None, `handler` runs per event. Either way in one transaction (see apply_batch_once).
    batch_handler: ApplyMany | None = None
    # Instead of `handler`, for a handler that needs the message key too (the bridge's).
    delivery_handler: ApplyOne | None = None

    def __post_init__(self) -> None:
        if (self.handler is None) == (self.delivery_handler is None):
            raise ValueError(f"subscription to {self.topic}: give handler or delivery_handler")

    def apply_one(self) -> ApplyOne:
        """Applies one delivery of the topic."""
        if self.delivery_handler is not None:
            return self.delivery_handler
        assert self.handler is not None
        return _one(self.handler)


@dataclass(frozen=True)
class Message:
    """One fetched message, whichever client fetched it (aiokafka, faust)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def of(cls, fetched: Any) -> Message:
        """From aiokafka's `ConsumerRecord` or faust's message (same attribute names)."""
        headers = tuple(fetched.headers or ())
        return cls(
            fetched.topic, fetched.partition, fetched.offset, fetched.key, fetched.value, headers
        )


@dataclass(frozen=True)
class PartitionLag:
    """What a consumer knows of one assigned partition (see `metrics.lag_family`)."""

    topic: str
    partition: int
    highwater: int | None  # from the last fetch response; None before the first
    consumed: int | None  # the next offset the group reads (committed, else the position)


@dataclass(frozen=True)
class MessageOutcome:
    """What became of a message; `dead_letter` is set when it did not validate or fit."""

    kind: str  # applied | duplicate | parked | dead_letter
    dead_letter: DeadLetter | None = None


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
    return envelope_of(model).model_validate_json(value or b"")


def describe_validation_error(exc: ValidationError) -> str:
    """A short reason naming each bad field."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(message)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


async def apply_batch_once(
    conn: DbConnection,
    deliveries: list[Delivery],
    apply_one: ApplyOne,
    apply_many: ApplyMany | None = None,
) -> list[str]:
    """Apply a batch once, inside the caller's transaction; one outcome per delivery, in order:
    "applied", "duplicate" or "parked".

    The event ids go into the inbox in one statement with the effects; repeats (seen before,
    or twice in this batch) are skipped. The new events are applied together by `apply_many`
    (default: `apply_one` for each, in order) inside one savepoint: the common case costs no
    round trip per event. When that raises, the savepoint is rolled back and the events are
    applied one by one, each in its own savepoint, so that only the failing ones are parked
    with their reason. A transient database failure is raised so the whole batch is retried.
    """
    seen: set[UUID] = set()
    unique: list[Delivery] = []
    for delivery in deliveries:
        if delivery.event.event_id not in seen:
            seen.add(delivery.event.event_id)
            unique.append(delivery)
    rows = await conn.fetch(
        "INSERT INTO dwsim_inbox (event_id, topic, event_type, correlation_id, traceparent) "
        "SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[]) "
        "ON CONFLICT DO NOTHING RETURNING event_id",
        [d.event.event_id for d in unique],
        [d.topic for d in unique],
        [d.event.event_type for d in unique],
        [d.event.correlation_id for d in unique],
        [d.trace.traceparent if d.trace is not None else None for d in unique],
    )
    new_ids = {r["event_id"] for r in rows}
    fresh = [d for d in unique if d.event.event_id in new_ids]
    outcome: dict[UUID, str] = {d.event.event_id: "applied" for d in fresh}
    if fresh:
        # Each invoice's outbox rows and log lines continue the trace of its own event.
        with for_events(
            ((d.event.correlation_id, d.trace) for d in fresh), f"apply {fresh[0].topic}"
        ):
            await _apply_fresh(conn, fresh, apply_one, apply_many, outcome)
    results = []
    for delivery in deliveries:
        event_id = delivery.event.event_id
        result = outcome.pop(event_id, "duplicate")
        if result == "duplicate":
            log.debug("event_duplicate_skipped", event_id=str(event_id))
        results.append(result)
    return results


async def _apply_fresh(
    conn: DbConnection,
    fresh: list[Delivery],
    apply_one: ApplyOne,
    apply_many: ApplyMany | None,
    outcome: dict[UUID, str],
) -> None:
    """Apply new events together in one savepoint, else one by one (see apply_batch_once)."""
    if fresh:
        try:
            async with conn.transaction():
                if apply_many is None:
                    for delivery in fresh:
                        with correlation(delivery.event.correlation_id):
                            await apply_one(conn, delivery)
                else:
                    await apply_many(conn, fresh)
        except Exception as exc:  # find the failing events; the others still apply
            if is_transient(exc):
                raise
            log.info("batch_failed_applying_one_by_one", events=len(fresh), error=repr(exc))
            for delivery in fresh:
                outcome[delivery.event.event_id] = await _apply_or_park(conn, delivery, apply_one)


async def apply_messages(
    pool: asyncpg.Pool,
    messages: Sequence[Message],
    subscriptions: Mapping[str, Subscription],
    *,
    max_message_bytes: int,
    stats: ConsumerStats,
) -> list[MessageOutcome]:
    """Apply fetched messages, one outcome per message, in order: each is size-checked and
    parsed (else a dead letter, for the caller to send before it acknowledges), and the valid
    ones are applied once, in ONE transaction (`apply_batch_once`), topic by topic in the
    order of `subscriptions`, each topic's events in fetch order; `stats` counts them.

    Raises what the transaction raises (an unreachable database, say): nothing was applied
    then, or everything was and only the answer got lost; the caller retries the batch.
    """
    outcomes: list[MessageOutcome | None] = [None] * len(messages)
    by_topic: dict[str, list[tuple[int, Delivery]]] = {}
    for index, msg in enumerate(messages):
        reason = too_large_reason(msg.value, max_message_bytes)
        if reason is None:
            try:
                event = parse_event(msg.value, subscriptions[msg.topic].payload_model)
            except ValidationError as exc:
                reason = describe_validation_error(exc)
        if reason is not None:
            outcomes[index] = MessageOutcome(
                "dead_letter", letter_for(msg, reason, max_message_bytes)
            )
            continue
        key = msg.key.decode(errors="replace") if msg.key else None
        delivery = Delivery(event, msg.topic, key, msg.value or b"", from_headers(msg.headers))
        by_topic.setdefault(msg.topic, []).append((index, delivery))
    if by_topic:
        async with pool.acquire() as conn, conn.transaction():
            for topic, sub in subscriptions.items():
                mine = by_topic.get(topic)
                if not mine:
                    continue
                kinds = await apply_batch_once(
                    conn, [d for _, d in mine], sub.apply_one(), sub.batch_handler
                )
                for (index, _), kind in zip(mine, kinds, strict=True):
                    outcomes[index] = MessageOutcome(kind)
    result = [o for o in outcomes if o is not None]
    kinds_ = [o.kind for o in result]
    stats.applied += kinds_.count("applied")
    stats.duplicates += kinds_.count("duplicate")
    stats.parked += kinds_.count("parked")
    stats.dead_lettered += kinds_.count("dead_letter")
    return result


def letter_for(msg: Message, reason: str, max_message_bytes: int) -> DeadLetter:
    """The dead letter of a message refused for `reason`."""
    return dead_letter(
        msg.topic,
        msg.partition,
        msg.offset,
        msg.key,
        msg.value,
        reason,
        max_bytes=max_message_bytes,
        headers=msg.headers,
    )


async def retry_parked_delivery(
    pool: asyncpg.Pool, event_id: UUID, subscriptions: Mapping[str, Subscription]
) -> bool:
    """Apply a parked event again through its topic's handler; True when it applied and left
    the parked list."""

    async def apply(conn: DbConnection, row: asyncpg.Record) -> None:
        sub = subscriptions[row["topic"]]
        event = parse_event(row["value"], sub.payload_model)
        await sub.apply_one()(conn, Delivery(event, row["topic"], row["key"], row["value"]))

    return await retry_parked(pool, event_id, apply)


def _one(handler: Handler) -> ApplyOne:
    async def apply(conn: DbConnection, delivery: Delivery) -> None:
        await handler(conn, delivery.event)

    return apply


async def _apply_or_park(conn: DbConnection, delivery: Delivery, apply_one: ApplyOne) -> str:
    event = delivery.event
    with correlation(event.correlation_id, event_type=event.event_type):
        try:
            async with conn.transaction():
                await apply_one(conn, delivery)
            return "applied"
        except Exception as exc:  # a failing event must not take the loop down
            if is_transient(exc):
                raise
            reason = f"{type(exc).__name__}: {exc}"
            log.error("event_parked", event_id=str(event.event_id), reason=reason)
            await park(conn, event, delivery.topic, delivery.key, delivery.value, reason)
            return "parked"


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
        self._rewinds: list[asyncio.Future[list[str]]] = []
        # The offsets this process committed last, per partition: what the lag is read from.
        self._committed: dict[TopicPartition, int] = {}
        self.stats = ConsumerStats()

    def stop(self) -> None:
        """Finish the batch in hand, then return from `run`."""
        self._stopping.set()

    async def run(self) -> None:
        """Consume until stopped."""
        self._consumer = make_consumer(self._settings, self._group_id, *self._subs)
        await self._consumer.start()
        database = database_status(self._pool)
        backoff = Backoff(self._settings.database_retry_max_backoff_s)
        try:
            while not self._stopping.is_set():
                if self._rewinds:
                    await self._rewind_now()
                batch = await self._consumer.getmany(timeout_ms=200)
                self.stats.assigned = sorted(
                    f"{tp.topic}:{tp.partition}" for tp in self._consumer.assignment()
                )
                if not batch:
                    continue
                try:
                    await self._process(batch)
                    backoff.reset()
                    database.reachable()
                    self.stats.last_error = None
                except (*TRANSIENT_DATABASE_ERRORS, KafkaError, asyncpg.PostgresError) as exc:
                    # Nothing of the batch committed, or all of it did and only its offsets
                    # did not (a COMMIT whose answer was lost): either way it is read again
                    # and the inbox drops what was applied. No offset moved past it.
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                    database.failed(exc, f"consumer {self._group_id}")
                    retry_in = backoff.next_delay()
                    log.warning(
                        "consumer_batch_failed",
                        group=self._group_id,
                        error=self.stats.last_error,
                        retry_in=round(retry_in, 2),
                    )
                    for tp, messages in batch.items():
                        self._consumer.seek(tp, messages[0].offset)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), retry_in)
        finally:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
            if self._dlq_producer is not None:
                with contextlib.suppress(Exception):
                    await self._dlq_producer.stop()

    async def rewind(self, deadline_s: float = 30.0) -> list[str]:
        """Read every partition this consumer holds again from its beginning, and commit that
        as the group's position; returns the partitions ("topic:partition").

        For a broker that lost its log (the local broker keeps it in memory): a consumer that
        was mid-stream still holds positions, and may commit offsets, of the old log, so the
        events published again on the new log (`/outbox/replay`) can land below them and be
        skipped. Done between two batches, so no batch of the old log commits after it, and
        again until the commit is accepted: right after the broker came back the consumer is
        not yet a member of the new group. The inbox skips whatever was applied already.
        """
        done: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._rewinds.append(done)
        try:
            return await asyncio.wait_for(done, deadline_s)
        except TimeoutError:
            raise ConsumerNotReady(
                f"consumer {self._group_id} holds no partitions, or its group refuses its "
                f"commits, after {deadline_s:.0f} s; try again when it has rejoined"
            ) from None

    async def _rewind_now(self) -> None:
        assert self._consumer is not None
        # A request that timed out (its future cancelled) is no longer wanted.
        self._rewinds = [done for done in self._rewinds if not done.done()]
        if not self._rewinds:
            return
        partitions = sorted(self._consumer.assignment())
        try:
            if not partitions:
                raise KafkaError("no partitions assigned yet")
            beginnings = await self._consumer.beginning_offsets(partitions)
            for tp in partitions:
                self._consumer.seek(tp, beginnings[tp])
            await self._consumer.commit(beginnings)
            self._committed.update(beginnings)
        except KafkaError as exc:
            # Not (yet) a member of the group, or the broker is still coming back: again after
            # the next poll, which rejoins.
            log.info("consumer_rewind_waits", group=self._group_id, error=repr(exc))
            return
        rewound = [f"{tp.topic}:{tp.partition}" for tp in partitions]
        log.warning("consumer_rewound", group=self._group_id, partitions=rewound)
        waiting, self._rewinds = self._rewinds, []
        for done in waiting:
            if not done.done():
                done.set_result(rewound)

    async def _process(self, batch: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> None:
        # In fetch order: halving keeps each partition's messages in order.
        await self._apply_isolating([msg for messages in batch.values() for msg in messages])
        await self._commit_offsets({tp: ms[-1].offset + 1 for tp, ms in batch.items()})

    async def _apply_isolating(self, messages: list[ConsumerRecord[Any, Any]]) -> None:
        """Apply messages; when that fails for anything but an outage, apply each half on its
        own, down to the single message that fails, which is dead-lettered with the reason.

        A half that applied stays applied (its transaction committed): a crash before the
        offset commit re-reads it and the inbox skips it. An outage is raised, so the whole
        batch is retried as before.
        """
        try:
            await self._apply(messages)
        except Exception as exc:
            if is_outage(exc):
                raise
            reason = f"{type(exc).__name__}: {exc}"
            if len(messages) > 1:
                log.warning(
                    "consumer_batch_failed_halving",
                    group=self._group_id,
                    messages=len(messages),
                    error=reason,
                )
                half = len(messages) // 2
                await self._apply_isolating(messages[:half])
                await self._apply_isolating(messages[half:])
                return
            [msg] = messages
            log.error(
                "message_unprocessable",
                group=self._group_id,
                topic=msg.topic,
                offset=msg.offset,
                error=reason,
            )
            await self._dead_letter(msg, f"unprocessable: {reason}")
            self.stats.dead_lettered += 1

    async def _apply(self, messages: list[ConsumerRecord[Any, Any]]) -> None:
        """Apply messages in one transaction, then dead-letter the refused ones."""
        outcomes = await apply_messages(
            self._pool,
            [Message.of(m) for m in messages],
            self._subs,
            max_message_bytes=self._settings.max_message_bytes,
            stats=self.stats,
        )
        # Dead letters go out before the offsets move on, so none is lost to a crash here.
        for msg, outcome in zip(messages, outcomes, strict=True):
            if outcome.dead_letter is not None:
                await self._send(outcome.dead_letter, msg.key)

    async def _commit_offsets(self, offsets: dict[TopicPartition, int]) -> None:
        assert self._consumer is not None
        try:
            await self._consumer.commit(offsets)
            self._committed.update(offsets)
        except CommitFailedError as exc:
            # A rebalance took the partitions; the next owner re-reads and its inbox skips.
            log.info("offset_commit_lost_to_rebalance", group=self._group_id, error=str(exc))

    async def _dead_letter(self, msg: ConsumerRecord[Any, Any], reason: str) -> None:
        letter = letter_for(Message.of(msg), reason, self._settings.max_message_bytes)
        await self._send(letter, msg.key)

    async def _send(self, letter: DeadLetter, key: bytes | None) -> None:
        if self._dlq_producer is None:
            self._dlq_producer = make_producer(self._settings, f"{self._group_id}-dlq")
            await self._dlq_producer.start()
        await send_dead_letter(self._dlq_producer, letter, key)

    async def retry_parked(self, event_id: UUID) -> bool:
        """Apply a parked event again; True when it applied and left the parked list."""
        return await retry_parked_delivery(self._pool, event_id, self._subs)

    async def partition_lags(self) -> list[PartitionLag]:
        """Each assigned partition's high-water mark from the last fetch response and the
        next offset the group reads: what this process committed, else (nothing committed
        here yet) the consumer's position."""
        consumer = self._consumer
        if consumer is None:
            return []
        lags = []
        for tp in sorted(consumer.assignment()):
            consumed = self._committed.get(tp)
            if consumed is None:
                with contextlib.suppress(TimeoutError, KafkaError, AssertionError):
                    # Waits only while the position is being reset; a scrape must not hang.
                    consumed = await asyncio.wait_for(consumer.position(tp), 0.2)
            with contextlib.suppress(AssertionError):  # revoked since `assignment()`
                lags.append(PartitionLag(tp.topic, tp.partition, consumer.highwater(tp), consumed))
        return lags
