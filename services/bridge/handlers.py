"""The bridge's consumed topics: decode each message and dispatch it to its use case.

`BridgeProcessor.process_batch` is what every faust agent calls with the messages of one fetch.
They go through the shared delivery path (`services.common.inbox.apply_messages`, as every
service's consumer): a bad or too large message becomes a dead letter for `<topic>.dlq`, and the
valid events are applied in ONE transaction that records their ids in the shared inbox
(`dwsim_inbox`; a repeat is skipped). What applying means lives in `intake.py`: source events
become records of their table map, receipts settle records, a Finance-side proposal header
change is refused as a one-way violation. The administrator's actions are in `commands.py`.

A handler that raises for an unexpected reason parks the event in `dwsim_parked_event` with the
reason and processing continues; an unreachable database raises to the agent, which waits it
out (at-least-once: no offset moves past an event that was not applied).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final
from uuid import UUID

import asyncpg

from schemas.registry import TOPIC_PAYLOADS
from schemas.topics import Topic, topic_name
from services.bridge import repository as repo
from services.bridge.commands import MAP_SLUGS, BridgeCommands
from services.bridge.domain import (
    PlatformLimits,
    QueueLimits,
)
from services.bridge.error_queue import ErrorQueue
from services.bridge.intake import Intake
from services.bridge.sending import RecordSender
from services.bridge.table_maps import DEFAULT_ALERT_RULES, TABLE_MAPS
from services.common.db import TRANSIENT_DATABASE_ERRORS, DbConnection
from services.common.inbox import (
    ConsumerStats,
    Delivery,
    Message,
    MessageOutcome,
    Subscription,
    apply_messages,
    retry_parked_delivery,
)
from services.common.settings import Settings

# Topics the bridge consumes (base names; the prefix is added per simulation).
SOURCE_TOPICS: Final[tuple[Topic, ...]] = (
    Topic.INVOICE_CONFIRMED,
    Topic.ACTUALS_CREATED,
    Topic.INVOICE_POSTED,
    Topic.JOURNAL_POSTED,
    Topic.PROPOSAL_HEADER_CHANGED,
    Topic.SYNC_RECEIPTS,
)

# Errors meaning the database is away (or the transaction lost a race): never park for them.
DATABASE_UNAVAILABLE: Final = TRANSIENT_DATABASE_ERRORS


def utc_now() -> datetime:
    return datetime.now(UTC)


class BridgeProcessor:
    """Decodes and applies messages; owns no task and no broker connection.

    `commands` holds the administrator's and the workers' use cases on the same pool.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.stats = ConsumerStats()
        limits = QueueLimits(
            max_age=timedelta(seconds=settings.queue_max_age_s),
            max_size_bytes=settings.queue_max_bytes,
        )
        self.intake = Intake(
            RecordSender(settings.topic_prefix),
            ErrorQueue(clock),
            limits,
            clock,
            PlatformLimits(settings.platform_limits),
        )
        self.commands = BridgeCommands(pool, self.intake)
        self._subscriptions = {
            topic_name(base, settings.topic_prefix): Subscription(
                topic_name(base, settings.topic_prefix),
                TOPIC_PAYLOADS[base],
                delivery_handler=self._apply_one,
                batch_handler=self._apply_many,
            )
            for base in SOURCE_TOPICS
        }
        self._base_of = {topic_name(t, settings.topic_prefix): t for t in SOURCE_TOPICS}

    async def process(self, msg: Message) -> MessageOutcome:
        """Apply one message (see `process_batch`)."""
        [outcome] = await self.process_batch([msg])
        return outcome

    async def process_batch(self, messages: list[Message]) -> list[MessageOutcome]:
        """Apply messages in one transaction; one outcome per message, in order (the shared
        delivery path: dead letters, inbox, apply once, parking, stats)."""
        return await apply_messages(
            self.pool,
            messages,
            self._subscriptions,
            max_message_bytes=self.settings.max_message_bytes,
            stats=self.stats,
        )

    async def retry_parked(self, event_id: UUID) -> bool:
        """Apply a parked event again (the shared /parked-events API calls this)."""
        return await retry_parked_delivery(self.pool, event_id, self._subscriptions)

    async def _apply_one(self, conn: DbConnection, delivery: Delivery) -> None:
        await self._apply_many(conn, [delivery])

    async def _apply_many(self, conn: DbConnection, deliveries: list[Delivery]) -> None:
        """Runs of one topic go to their use case together (bulk paths), in arrival order."""
        start = 0
        while start < len(deliveries):
            topic = deliveries[start].topic
            end = start
            while end < len(deliveries) and deliveries[end].topic == topic:
                end += 1
            await self._dispatch(conn, self._base_of[topic], deliveries[start:end])
            start = end

    async def _dispatch(self, conn: DbConnection, base: Topic, run: list[Delivery]) -> None:
        if base is Topic.SYNC_RECEIPTS:
            await self.intake.on_receipts(conn, [d.event for d in run])
        elif base is Topic.PROPOSAL_HEADER_CHANGED:
            for delivery in run:
                await self.intake.on_one_way_violation(conn, delivery.event)
        else:
            await self.intake.on_source_events(conn, base, [(d.event, d.key) for d in run])


async def seed(pool: asyncpg.Pool) -> None:
    """Maps (running) and default alert rules, on first start."""
    async with pool.acquire() as conn:
        await repo.seed_maps(conn, TABLE_MAPS, MAP_SLUGS, DEFAULT_ALERT_RULES)
