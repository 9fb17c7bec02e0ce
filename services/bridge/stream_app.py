"""The bridge as a faust-streaming worker: one agent per source topic, plus the admin API,
the outbox relay and the periodic workers, all in one process and one event loop.

Guards against faust's known hazards (DESIGN.md, "The bridge"):
- every agent has concurrency 1 and acks by hand (`stream.noack()`), only after the event's
  PostgreSQL transaction committed: faust's stream acks an event in a `finally`, so with
  automatic acks an agent that is cancelled (SIGTERM) or raises mid-event would have that
  event acked and its offset committed although nothing was applied;
- a database that is unreachable is waited out: the agent keeps its events un-acked and
  retries them with backoff for as long as it takes, and the process stays up (it used to
  crash after 30 s, and at once on asyncpg's `InternalClientError`, leaving the bridge down
  until someone restarted it);
- an agent that fails for anything else but a parked event crashes the whole process at once
  (`os._exit`), before any offset commit: faust would otherwise restart the actor or leave the
  worker running without it; the restarted worker re-reads from the last committed offset;
- no faust Tables: every durable fact lives in the bridge's PostgreSQL database;
- the consumer group's session timeout and heartbeat come from settings (3 s / 1 s locally);
- faust's web server is disabled and still binds a port: it gets a free one of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import asyncpg
import faust
import mode
from aiokafka import AIOKafkaProducer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from schemas.topics import topic_name
from services.bridge import api
from services.bridge.handlers import DATABASE_UNAVAILABLE, SOURCE_TOPICS, BridgeProcessor, seed
from services.bridge.metrics import faust_partition_lags, records_source
from services.bridge.workers import BRIDGE_PRUNE_RULES, CatchUpWorker, RedriveWorker
from services.common.backoff import Backoff
from services.common.db import create_pool, database_status, migrate_service
from services.common.dead_letters import send_dead_letter
from services.common.errors import ConsumerNotReady
from services.common.inbox import Message, PartitionLag
from services.common.kafka import faust_broker_options, make_producer
from services.common.logging import get_logger
from services.common.outbox import OutboxRelay
from services.common.ports import free_port
from services.common.retention import RetentionWorker
from services.common.service import (
    EmbeddedServer,
    ServiceStateFile,
    embedded_server,
    port_for,
    supervise,
    wire_app,
)
from services.common.settings import Settings

log = get_logger(__name__)

SERVICE = "bridge"
MIGRATIONS = Path(__file__).parent / "migrations"
# Exit code of a worker that crashed on purpose (an agent failed).
EXIT_AGENT_CRASHED = 70

# Set from the settings before the worker starts (see build_faust_app).
_fetch_max_wait_ms = Settings.model_fields["fetch_max_wait_ms"].default


def _patch_fetch_max_wait() -> None:
    """faust 0.15.3 hard-codes fetch_max_wait_ms=1500 for its consumer. The default broker
    never answers a waiting fetch early, so that would put ~1.5 s on every hop; use the
    `fetch_max_wait_ms` setting instead (set before the consumer starts, which is when
    aiokafka reads it)."""
    original = AIOKafkaConsumerThread._create_worker_consumer
    if getattr(original, "_dwsim_patched", False):
        return

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = _fetch_max_wait_ms
        return consumer

    create._dwsim_patched = True  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = create  # type: ignore[method-assign]


class BridgeRuntime(mode.Service):
    """Owns the pool, the DLQ producer, the relay, the workers and the admin API.

    Started by the faust worker before the app (so before any agent) and stopped after it.
    """

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.ready = asyncio.Event()
        self.pool: asyncpg.Pool | None = None
        self.processor: BridgeProcessor | None = None
        self.faust_app: faust.App | None = None
        self._dlq: AIOKafkaProducer | None = None
        self._workers: list[Any] = []
        self._background: list[asyncio.Task[Any]] = []
        self._server: EmbeddedServer | None = None
        self._tracker: asyncio.Task[None] | None = None
        self._state_file = ServiceStateFile(settings, SERVICE)
        self.port = port_for(settings, SERVICE)

    async def on_start(self) -> None:
        settings = self.settings
        # faust's worker leaves the Kafka client's loggers at DEBUG; measured at ~6 % of the
        # bridge's CPU spent building log records nobody reads.
        for name in ("aiokafka", "kafka"):
            logging.getLogger(name).setLevel(settings.faust_loglevel.upper())
        self.pool = await create_pool(settings.service_database_url(SERVICE), max_size=10)
        await migrate_service(self.pool, SERVICE, MIGRATIONS)
        await seed(self.pool)
        self.processor = BridgeProcessor(self.pool, settings)
        self._dlq = make_producer(settings, f"{settings.topic_prefix}bridge-dlq")
        await self._dlq.start()
        relay = OutboxRelay(self.pool, settings, SERVICE)
        commands = self.processor.commands
        self._workers = [
            relay,
            CatchUpWorker(commands, settings),
            RedriveWorker(commands, settings),
            RetentionWorker(self.pool, settings, BRIDGE_PRUNE_RULES),
        ]
        app = api.build_app()
        metrics = wire_app(
            app,
            pool=self.pool,
            settings=settings,
            name=SERVICE,
            relay=relay,
            consumer=self.processor,  # /health and /parked-events read it
            rewind=self.rewind,
            lags=self.partition_lags,
            commands=commands,
        )
        metrics.add_source(records_source(self.pool))
        self.processor.intake.on_round_trips = metrics.receipt_round_trips.add
        self._server = embedded_server(app, settings, self.port)
        database = database_status(self.pool)
        self._background = [
            asyncio.create_task(
                self._guard(supervise(w, type(w).__name__, database, settings), type(w).__name__)
            )
            for w in self._workers
        ]
        self._background.append(asyncio.create_task(self._guard(self._server.serve(), "api")))
        self._tracker = asyncio.create_task(self._track_assignment())
        url = self._state_file.write(settings, self.port)
        log.info("service_started", url=url, openapi=f"{url}/docs", group=group_id(settings))
        self.ready.set()

    async def rewind(self) -> list[str]:
        """The bridge's share of `/consumer/rewind` (see `rewind_faust_consumer`)."""
        assert self.faust_app is not None
        return await rewind_faust_consumer(self.faust_app)

    async def partition_lags(self) -> list[PartitionLag]:
        """The faust worker's lag per partition, for /metrics."""
        if self.faust_app is None:
            return []
        try:
            return await faust_partition_lags(self.faust_app)
        except Exception:  # the consumer is not started yet, or is being rebuilt
            return []

    async def _guard(self, coro: Any, name: str) -> None:
        """A background task that ends while the service runs takes the process down."""
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            crash(f"task {name} crashed", exc)
        if not self.should_stop:
            crash(f"task {name} ended", None)

    async def _track_assignment(self) -> None:
        while True:
            app = self.faust_app
            if app is not None and self.processor is not None:
                with contextlib.suppress(Exception):
                    self.processor.stats.assigned = sorted(
                        f"{tp.topic}:{tp.partition}" for tp in app.consumer.assignment()
                    )
            await asyncio.sleep(0.25)

    async def on_stop(self) -> None:
        if self._tracker is not None:
            self._tracker.cancel()
        for worker in self._workers:
            worker.stop()
        if self._server is not None:
            self._server.should_exit = True
        if self._background:
            _, still = await asyncio.wait(self._background, timeout=5)
            for task in still:
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._background, return_exceptions=True)
        if self._dlq is not None:
            with contextlib.suppress(Exception):
                await self._dlq.stop()
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pool.close(), 5)
        self._state_file.remove()
        log.info("service_stopped")

    async def handle(self, events: list[Any]) -> None:
        """Apply a batch of messages of one topic; returns only when its transaction committed
        (and its dead letters were sent). Never raises: a failure it cannot handle crashes the
        process, so nothing of the batch is acked."""
        await self.ready.wait()
        assert self.processor is not None and self._dlq is not None
        messages = [event.message for event in events]
        batch = [Message.of(m) for m in messages]
        topic = messages[0].topic
        database = database_status(self.processor.pool)
        backoff = Backoff(self.settings.database_retry_max_backoff_s)
        try:
            while True:
                try:
                    outcomes = await self.processor.process_batch(batch)
                    database.reachable()
                    break
                except DATABASE_UNAVAILABLE as exc:
                    # No deadline: while the database is away nothing of the batch committed
                    # (or all of it did, and the inbox drops the repeat), the events stay
                    # un-acked so no offset moves past them, and a restart would find the
                    # database just as away. A stop cancels the wait; the events are re-read.
                    self.processor.stats.last_error = f"{type(exc).__name__}: {exc}"
                    database.failed(exc, f"agent {topic}")
                    retry_in = backoff.next_delay()
                    log.warning(
                        "event_retry",
                        topic=topic,
                        events=len(batch),
                        error=repr(exc),
                        retry_in=round(retry_in, 2),
                    )
                    await asyncio.sleep(retry_in)
            if backoff.failures:
                self.processor.stats.last_error = None
            for message, outcome in zip(messages, outcomes, strict=True):
                if outcome.dead_letter is None:
                    continue
                # Sent before the ack, so a crash here re-reads the message, never loses it;
                # the letter was made to fit the producer's limit (dead_letters.py).
                await send_dead_letter(self._dlq, outcome.dead_letter, message.key)
        except asyncio.CancelledError:
            raise  # the worker is stopping: the events stay un-acked and are read again
        except Exception as exc:
            crash(f"agent for {topic} failed", exc)


def crash(what: str, exc: BaseException | None) -> None:
    """Stop the process now, without committing anything (see the module docstring)."""
    log.critical("process_crashed", reason=what, error=repr(exc))
    sys.stderr.flush()
    os._exit(EXIT_AGENT_CRASHED)


async def rewind_faust_consumer(app: faust.App, deadline_s: float = 30.0) -> list[str]:
    """Read every partition the worker holds again from its beginning and commit that as the
    group's position; returns the partitions ("topic:partition").

    For a broker that lost its log: what the worker remembers of the old log (faust's read
    offsets, acks and committed marks, and aiokafka's positions) would skip the events
    published again on the new log below those offsets, and faust drops a fetched message
    whose offset is below its read offset. faust's `seek` clears the read offset; the acks
    and the committed mark are faust's own bookkeeping, reset here because nothing else does
    it outside a rebalance. Again until the commit is accepted: right after the broker came
    back the worker is not yet a member of the new group. The inbox skips whatever was
    applied already.
    """
    consumer: Any = app.consumer
    end = asyncio.get_running_loop().time() + deadline_s
    while True:
        partitions = sorted(consumer.assignment())
        if partitions and await _rewound(consumer, partitions):
            rewound = [f"{tp.topic}:{tp.partition}" for tp in partitions]
            log.warning("consumer_rewound", group=app.conf.id, partitions=rewound)
            return rewound
        if asyncio.get_running_loop().time() > end:
            raise ConsumerNotReady(
                f"the bridge worker holds no partitions, or its group refuses its commits, "
                f"after {deadline_s:.0f} s; try again when it has rejoined"
            )
        await asyncio.sleep(0.25)


async def _rewound(consumer: Any, partitions: list[Any]) -> bool:
    """One attempt of `rewind_faust_consumer`: False when the group refused the commit."""
    beginnings = await consumer.earliest_offsets(*partitions)
    for tp in partitions:
        consumer._acked.pop(tp, None)
        consumer._acked_index.pop(tp, None)
        consumer._gap.pop(tp, None)
        consumer._committed_offset[tp] = None
        await consumer.seek(tp, beginnings.get(tp, 0))
    return bool(await consumer._commit({tp: beginnings.get(tp, 0) for tp in partitions}))


def group_id(settings: Settings) -> str:
    """The consumer group (faust app id) of the bridge workers of one simulation."""
    return f"{settings.topic_prefix}{SERVICE}"


def build_faust_app(settings: Settings, runtime: BridgeRuntime) -> faust.App:
    """The faust app with one agent per source topic."""
    global _fetch_max_wait_ms
    _fetch_max_wait_ms = settings.fetch_max_wait_ms
    _patch_fetch_max_wait()
    app = faust.App(
        group_id(settings),
        **faust_broker_options(settings),
        key_serializer="raw",
        value_serializer="raw",
        autodiscover=False,
        datadir=str(settings.home / "bridge-faust"),
        web_enabled=False,
        web_host=settings.api_host,
        web_port=free_port(settings.api_host),
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.consumer_session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.consumer_heartbeat_interval_ms / 1000,
        broker_commit_interval=0.5,
        broker_max_poll_records=settings.consumer_max_batch,
    )
    for base in SOURCE_TOPICS:
        topic = app.topic(
            topic_name(base, settings.topic_prefix),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )
        app.agent(topic, name=f"bridge.{base.value}", concurrency=1)(_agent_for(runtime))
    _log_assignment_failures(app)
    runtime.faust_app = app
    return app


def _log_assignment_failures(app: faust.App) -> None:
    """aiokafka turns an error of the group leader's assignment into a bare
    `KafkaError('AssertionError()')` that crashes the worker without the cause; log the
    cause, with its traceback, before it does."""
    assignor: Any = app.assignor
    original = assignor.assign

    def assign(cluster: Any, member_metadata: Any) -> Any:
        try:
            return original(cluster, member_metadata)
        except Exception as exc:
            log.exception(
                "partition_assignment_failed",
                error=repr(exc),
                topics=sorted(cluster.topics()),
                members=len(member_metadata),
            )
            raise

    assignor.assign = assign


def _agent_for(runtime: BridgeRuntime) -> Any:
    max_batch = runtime.settings.consumer_max_batch
    max_bytes = runtime.settings.consumer_max_batch_bytes

    async def agent(stream: faust.StreamT[bytes]) -> None:
        """Apply what has arrived as one batch, then ack it, and again.

        A reader task moves events from the stream into a bounded queue; the agent takes the
        first waiting event and every other one already there (up to the batch size in events
        and in bytes), so a lone event goes at once and a backlog goes in large transactions.
        The byte bound matters for messages that carry many records (a run of 500 actuals):
        29 of them were 14,500 records in one 6 s transaction, and the relay had nothing to
        publish until it committed. Not faust's
        `take_events`: it acks its buffer in a `finally`, also when the agent is cancelled
        mid-batch, which would commit offsets of events never applied.
        """
        manual: Any = stream.noack()  # type: ignore[attr-defined]
        waiting: asyncio.Queue[Any] = asyncio.Queue(maxsize=max_batch)

        async def read() -> None:
            async for event in manual.events():
                await waiting.put(event)

        reader = asyncio.create_task(read())
        getter: asyncio.Future[Any] | None = None
        try:
            while True:
                getter = asyncio.ensure_future(waiting.get())
                await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    reader.result()  # the stream ended or failed: so does the agent
                    return
                batch = [getter.result()]
                size = _size(batch[0])
                while len(batch) < max_batch and size < max_bytes and not waiting.empty():
                    batch.append(waiting.get_nowait())
                    size += _size(batch[-1])
                await runtime.handle(batch)
                for event in batch:
                    await manual.ack(event)
        finally:
            reader.cancel()
            if getter is not None:
                getter.cancel()

    return agent


def _size(event: Any) -> int:
    return len(event.message.value or b"")
