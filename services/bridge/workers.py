"""The bridge's periodic workers: catch-up after resume / run, re-drive of pending records, and
what the bridge prunes beside the shared retention rules.

Both only read and write PostgreSQL (the relay publishes what they put in the outbox), so they
can run in every bridge process at once: the map row lock serialises them per map.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Final

from services.bridge import repository as repo
from services.bridge.commands import BridgeCommands
from services.bridge.domain import (
    MapState,
)
from services.common import tracing
from services.common.backoff import Backoff
from services.common.db import TRANSIENT_DATABASE_ERRORS, database_status
from services.common.logging import get_logger
from services.common.retention import COMMON_RULES, PruneRule
from services.common.settings import Settings

log = get_logger(__name__)

# The activity log, as Microsoft's dual-write keeps it: for a while, not forever. The map's
# count of one-way violations (queries.map_figures) then counts those of the retention period.
ACTIVITY_LOG = PruneRule(
    "bridge_activity",
    "DELETE FROM bridge_activity WHERE id IN ("
    " SELECT id FROM bridge_activity WHERE at < now() - make_interval(secs => $1)"
    " ORDER BY at LIMIT $2 FOR UPDATE SKIP LOCKED)",
    lambda s: s.retention_s,
)
# A synced record's payload is what was sent; nothing reads it once the target applied it (a
# retry maps the record again from its source record). Pending, failed, queued and held records
# keep theirs: a re-drive, a retry or a paused queue sends or weighs it. The record itself, its
# status and source record stay: reconciliation and the invoice view read them.
SYNCED_PAYLOADS = PruneRule(
    "bridge_synced_payloads",
    "UPDATE bridge_record SET payload = NULL WHERE record_id IN ("
    " SELECT record_id FROM bridge_record"
    " WHERE status = 'synced' AND payload IS NOT NULL"
    " AND synced_at < now() - make_interval(secs => $1)"
    " ORDER BY synced_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
    lambda s: s.retention_s,
)
BRIDGE_PRUNE_RULES: Final = (*COMMON_RULES, ACTIVITY_LOG, SYNCED_PAYLOADS)

CATCH_UP_BATCH: Final = 200
REDRIVE_BATCH: Final = 500


class _Periodic:
    """Runs `tick` every `interval` seconds until stopped; while the database is unreachable,
    the next tick comes after a backoff instead (each tick is its own transactions: a failed
    one left nothing behind and is done again)."""

    def __init__(self, commands: BridgeCommands, settings: Settings, interval: float) -> None:
        self._commands = commands
        self._settings = settings
        self._interval = interval
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        database = database_status(self._commands.pool)
        backoff = Backoff(self._settings.database_retry_max_backoff_s)
        while not self._stopping.is_set():
            busy = False
            wait = self._interval
            try:
                # Records re-sent take up their invoice's trace (outbox.add_many resumes it).
                with tracing.continued(None, type(self).__name__):
                    busy = await self.tick()
                backoff.reset()
                database.reachable()
            except TRANSIENT_DATABASE_ERRORS as exc:
                database.failed(exc, type(self).__name__)
                wait = backoff.next_delay()
                log.warning(
                    "worker_tick_failed",
                    worker=type(self).__name__,
                    error=repr(exc),
                    retry_in=round(wait, 2),
                )
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), wait)

    async def tick(self) -> bool:
        """One round; True when there is more to do at once."""
        raise NotImplementedError


class CatchUpWorker(_Periodic):
    """Drains the queue of resuming and initializing maps in order, then sets them running."""

    def __init__(self, commands: BridgeCommands, settings: Settings, interval: float = 0.2) -> None:
        super().__init__(commands, settings, interval)

    async def tick(self) -> bool:
        async with self._commands.pool.acquire() as conn:
            names = await repo.maps_in_states(conn, (MapState.RESUMING, MapState.INITIALIZING))
        more = False
        for name in names:
            more |= await self._commands.drain_queue(name, CATCH_UP_BATCH)
        return more


class RedriveWorker(_Periodic):
    """Re-sends pending records whose receipt has not come within `receipt_timeout_s`."""

    def __init__(self, commands: BridgeCommands, settings: Settings) -> None:
        timeout = settings.receipt_timeout_s
        super().__init__(commands, settings, min(1.0, timeout / 4))
        self._timeout = timedelta(seconds=timeout)

    async def tick(self) -> bool:
        async with self._commands.pool.acquire() as conn:
            names = await repo.maps_in_states(conn, (MapState.RUNNING,))
        sent = 0
        for name in names:
            sent += await self._commands.redrive(name, self._timeout, REDRIVE_BATCH)
        return sent >= REDRIVE_BATCH
