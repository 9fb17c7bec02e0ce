"""The Dataverse service in-process for tests: API over ASGI, its outbox relay and consumer.

The API, relay and consumer are the service's own, on the real PostgreSQL and the real broker;
only uvicorn is left out (requests go through `httpx.ASGITransport`).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI

from schemas.topics import Topic, topic_name
from services.common.inbox import InboxConsumer
from services.common.outbox import OutboxRelay, unpublished_count
from services.common.settings import Settings
from services.dataverse.handlers import subscriptions
from tests.waiting import wait_for


def bearer(token: str) -> dict[str, str]:
    """Authorization header of a role's token."""
    return {"Authorization": f"Bearer {token}"}


@dataclass
class DataverseUnderTest:
    """A running Dataverse service: `client` speaks to its API as the project manager."""

    app: FastAPI
    client: httpx.AsyncClient
    pool: asyncpg.Pool
    settings: Settings
    relay: OutboxRelay
    consumer: InboxConsumer | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def topic(self, topic: Topic) -> str:
        """Full name of a topic in this test's namespace."""
        return topic_name(topic, self.settings.topic_prefix)

    def start_consumer(self) -> InboxConsumer:
        """Start the service's consumer of `dv-actuals-accounting`, as the service does."""
        consumer = InboxConsumer(
            self.pool,
            self.settings,
            f"{self.settings.topic_prefix}dataverse",
            subscriptions(self.settings),
        )
        self.consumer = consumer
        self.app.state.consumer = consumer
        self.tasks.append(asyncio.create_task(consumer.run()))
        return consumer

    async def stop(self) -> None:
        """Stop the relay and the consumer and wait for their end."""
        self.relay.stop()
        if self.consumer is not None:
            self.consumer.stop()
        await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 20)

    async def outbox_drained(self) -> None:
        """Wait until the relay has published every outbox row."""

        async def drained() -> bool:
            async with self.pool.acquire() as conn:
                return await unpublished_count(conn) == 0

        await wait_for(drained, deadline_s=20, what="the outbox to drain")

    async def table(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        """Rows of a query on the service's database."""
        async with self.pool.acquire() as conn:
            return [dict(r) for r in await conn.fetch(sql, *args)]


@dataclass(frozen=True)
class Message:
    """One message read back from a topic."""

    key: str | None
    value: dict[str, Any]

    @property
    def payload(self) -> dict[str, Any]:
        """The event's payload."""
        payload: dict[str, Any] = self.value["payload"]
        return payload


async def read_topic(settings: Settings, topic: str, at_least: int) -> list[Message]:
    """Every message on a topic, from the start: at least `at_least`, and then all there are.

    Reading stops once each partition's position has reached the high-water mark the fetch
    responses report (the broker's ListOffsets under-reports it; see DESIGN.md), so a message
    published beyond the expected ones is read too and shows up in the count.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers(),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    )
    await consumer.start()
    messages: list[Message] = []
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)

        async def all_read() -> bool:
            batch = await consumer.getmany(timeout_ms=100)
            for records in batch.values():
                messages.extend(
                    Message(
                        key=r.key.decode() if r.key is not None else None,
                        value=json.loads(r.value),
                    )
                    for r in records
                )
            if len(messages) < at_least:
                return False
            for tp in tps:
                highwater = consumer.highwater(tp)
                if highwater is None or await consumer.position(tp) < highwater:
                    return False
            return True

        await wait_for(all_read, deadline_s=20, what=f"{at_least} messages on {topic}")
    finally:
        await consumer.stop()
    return messages


async def read_actuals(settings: Settings, topic: str) -> tuple[list[Message], list[Message]]:
    """Every message on `actuals-created` (call after the outbox drained), and every actual
    they carry: one Message per actual, with the key and envelope of the message it came in."""
    messages = await read_topic(settings, topic, 1)
    actuals = [
        Message(key=m.key, value={**m.value, "payload": actual})
        for m in messages
        for actual in m.payload["actuals"]
    ]
    return messages, actuals
