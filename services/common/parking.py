"""Parked events: a valid event whose handler failed, kept with its reason to be retried.

One implementation for every consumer (the services' inbox loop and the bridge's agents).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import asyncpg

from schemas.envelope import Envelope
from services.common.db import DbConnection, is_transient
from services.common.errors import NotFound


async def park(
    conn: DbConnection,
    event: Envelope[Any],
    topic: str,
    key: str | None,
    value: bytes,
    reason: str,
) -> None:
    """Keep the event with the reason its handler gave; a repeat counts one more attempt."""
    await conn.execute(
        "INSERT INTO dwsim_parked_event "
        "(event_id, topic, key, event_type, correlation_id, value, reason) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id) DO UPDATE "
        "SET reason = EXCLUDED.reason, attempts = dwsim_parked_event.attempts + 1",
        event.event_id,
        topic,
        key,
        event.event_type,
        event.correlation_id,
        value,
        reason,
    )


ApplyParked = Callable[[DbConnection, asyncpg.Record], Awaitable[None]]


async def retry_parked(pool: asyncpg.Pool, event_id: UUID, apply: ApplyParked) -> bool:
    """Apply a parked event again; True when it applied and left the parked list.

    A failure updates the reason and the attempt count; a database outage is raised.
    """
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT * FROM dwsim_parked_event WHERE event_id = $1 FOR UPDATE", event_id
        )
        if row is None:
            raise NotFound(f"no parked event {event_id}")
        try:
            async with conn.transaction():
                await apply(conn, row)
        except Exception as exc:
            if is_transient(exc):
                raise
            await conn.execute(
                "UPDATE dwsim_parked_event SET reason = $2, attempts = attempts + 1 "
                "WHERE event_id = $1",
                event_id,
                f"{type(exc).__name__}: {exc}",
            )
            return False
        await conn.execute("DELETE FROM dwsim_parked_event WHERE event_id = $1", event_id)
        return True
