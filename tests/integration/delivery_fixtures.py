"""A tiny producer service and consumer service built on the shared machinery, for the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
from pydantic import BaseModel

from schemas.envelope import Envelope
from services.common import outbox
from services.common.db import DbConnection, create_pool, migrate_service
from services.common.settings import Settings

EMPTY_MIGRATIONS = Path(__file__).parent / "no_migrations"


class Ping(BaseModel):
    """Test payload."""

    n: int
    note: str = ""


async def open_service_pool(settings: Settings, service: str) -> asyncpg.Pool:
    """Pool on a service's own database with the shared tables migrated."""
    pool = await create_pool(settings.service_database_url(service))
    EMPTY_MIGRATIONS.mkdir(exist_ok=True)
    await migrate_service(pool, service, EMPTY_MIGRATIONS)
    async with pool.acquire() as conn:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS effect "
            "(id bigserial PRIMARY KEY, n integer NOT NULL, event_id uuid NOT NULL)"
        )
    return pool


async def add_ping(conn: DbConnection, topic: str, n: int) -> Envelope[Any]:
    """Write a Ping to the outbox within the caller's transaction."""
    event = outbox.envelope("ping", "test", Ping(n=n), correlation_id=f"inv-{n}")
    await outbox.add(conn, topic, f"k{n % 7}", event)
    return event


async def record_effect(conn: DbConnection, event: Envelope[Any]) -> None:
    """The consumer's effect: one row per applied event."""
    await conn.execute(
        "INSERT INTO effect (n, event_id) VALUES ($1, $2)", event.payload.n, event.event_id
    )


async def effects(pool: asyncpg.Pool) -> list[int]:
    """Applied effects, in arrival order."""
    async with pool.acquire() as conn:
        return [r["n"] for r in await conn.fetch("SELECT n FROM effect ORDER BY id")]
