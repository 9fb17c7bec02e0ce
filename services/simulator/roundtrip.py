"""The delivery round trip on the real infrastructure: outbox → broker → inbox, timed.

Used by `dwsim demo` until the services exist, and by `dwsim check` after: it proves the
broker, PostgreSQL and the shared delivery machinery work on this machine.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from schemas.envelope import Envelope
from schemas.topics import Topic, topic_name
from services.common import outbox
from services.common.db import DbConnection, create_pool, migrate_service
from services.common.inbox import InboxConsumer, Subscription
from services.common.outbox import OutboxRelay
from services.common.settings import Settings

_NO_MIGRATIONS = Path(__file__).parent / "roundtrip_migrations"


class RoundTripPing(BaseModel):
    """A numbered probe event."""

    n: int


@dataclass(frozen=True)
class RoundTripResult:
    """What the round trip measured."""

    events: int
    applied: int
    duplicates: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        """Throughput from first commit to last applied effect."""
        return self.events / self.seconds if self.seconds else 0.0


async def run_round_trip(
    settings: Settings, events: int = 200, deadline_s: float = 60
) -> RoundTripResult:
    """Commit `events` probes in dataverse's outbox and wait until finance's inbox applied them."""
    source = await create_pool(settings.service_database_url("dataverse"))
    target = await create_pool(settings.service_database_url("finance"))
    topic = topic_name(Topic.SYNC_RECEIPTS, settings.topic_prefix + "roundtrip-")
    try:
        await migrate_service(source, "dataverse-roundtrip", _NO_MIGRATIONS)
        await migrate_service(target, "finance-roundtrip", _NO_MIGRATIONS)
        async with target.acquire() as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS roundtrip_effect (n integer)")
            await conn.execute("TRUNCATE roundtrip_effect")

        async def apply(conn: DbConnection, event: Envelope[RoundTripPing]) -> None:
            await conn.execute("INSERT INTO roundtrip_effect (n) VALUES ($1)", event.payload.n)

        from infra.topics import provision_async

        await provision_async(
            settings.model_copy(update={"topic_prefix": settings.topic_prefix + "roundtrip-"})
        )
        relay = OutboxRelay(source, settings, "roundtrip")
        consumer = InboxConsumer(
            target, settings, f"{topic}-roundtrip", [Subscription(topic, RoundTripPing, apply)]
        )
        tasks = [asyncio.create_task(relay.run()), asyncio.create_task(consumer.run())]
        started = time.monotonic()
        async with source.acquire() as conn, conn.transaction():
            for n in range(events):
                await outbox.add(
                    conn,
                    topic,
                    str(n % 6),
                    outbox.envelope("roundtrip.ping", "dwsim", RoundTripPing(n=n)),
                )
        try:
            while time.monotonic() - started < deadline_s:
                async with target.acquire() as conn:
                    done = await conn.fetchval("SELECT count(*) FROM roundtrip_effect")
                if done >= events:
                    break
                await asyncio.sleep(0.05)
            elapsed = time.monotonic() - started
        finally:
            relay.stop()
            consumer.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
        async with target.acquire() as conn:
            applied = await conn.fetchval("SELECT count(*) FROM roundtrip_effect")
        return RoundTripResult(events, applied, consumer.stats.duplicates, elapsed)
    finally:
        await source.close()
        await target.close()
