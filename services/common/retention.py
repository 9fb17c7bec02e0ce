"""Bounded storage: what each service keeps only for a while, pruned in small batches.

Every service runs a `RetentionWorker` with its `PruneRule`s: the shared ones below (published
outbox rows, inbox event ids) and, in the bridge, its activity log and synced records'
payloads (services/bridge/workers.py). Each statement touches at most `retention_batch_rows`
rows found through an index on the timestamp it prunes by, and is its own short transaction;
rows another transaction holds are skipped (`SKIP LOCKED`) rather than waited for, and the
worker pauses between statements: pruning never holds a lock the flow waits on for longer
than one small batch, and a backlog (the first run after an upgrade) is worked off gradually.

What bounds the retention of an inbox id (`inbox_retention_s`): an event id must be kept as
long as the same event can arrive again, or it would be applied twice. It can arrive again
- from the outbox replay (`POST /outbox/replay`): only rows still in the outbox, so at most
  `retention_s` after they were published — hence `inbox_retention_s >= retention_s`;
- from the broker: a consumer that restarts before committing, or is rewound
  (`/consumer/rewind`), reads again whatever the topic still holds, so as long as the broker's
  log retention (Apache Kafka's default `retention.ms`: 7 days, the default here);
- not from the bridge's re-drive: a re-sent record is a new event with a new id, and the
  target recognises the record by its record id, which it keeps with the record itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg

from services.common.backoff import Backoff
from services.common.db import TRANSIENT_DATABASE_ERRORS, database_status
from services.common.logging import get_logger
from services.common.settings import Settings

log = get_logger(__name__)


@dataclass(frozen=True)
class PruneRule:
    """One kind of row kept for a while: a statement that prunes one batch of it.

    `statement` takes the retention in seconds ($1) and the batch size ($2) and prunes at
    most that many rows older than the retention, measured by the database's clock (the
    clock that stamped them).
    """

    name: str
    statement: str
    retention_s: Callable[[Settings], float]


OUTBOX_PUBLISHED = PruneRule(
    "outbox_published",
    # Only published rows: an unpublished row (the relay's, FOR UPDATE) is never old enough.
    "DELETE FROM dwsim_outbox WHERE id IN ("
    " SELECT id FROM dwsim_outbox"
    " WHERE published_at < now() - make_interval(secs => $1)"
    " ORDER BY published_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
    lambda s: s.retention_s,
)
INBOX_IDS = PruneRule(
    "inbox_ids",
    "DELETE FROM dwsim_inbox WHERE event_id IN ("
    " SELECT event_id FROM dwsim_inbox"
    " WHERE applied_at < now() - make_interval(secs => $1)"
    " ORDER BY applied_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
    lambda s: s.inbox_retention_s,
)
COMMON_RULES: tuple[PruneRule, ...] = (OUTBOX_PUBLISHED, INBOX_IDS)


async def prune_once(
    pool: asyncpg.Pool,
    settings: Settings,
    rules: Sequence[PruneRule],
    stopping: asyncio.Event | None = None,
) -> dict[str, int]:
    """Prune everything past its retention, batch by batch; the rows pruned, by rule."""
    pruned: dict[str, int] = {}
    for rule in rules:
        pruned[rule.name] = 0
        while stopping is None or not stopping.is_set():
            async with pool.acquire() as conn:
                status: str = await conn.execute(
                    rule.statement, rule.retention_s(settings), settings.retention_batch_rows
                )
            count = int(status.split()[-1])
            pruned[rule.name] += count
            if count < settings.retention_batch_rows:
                break
            await _pause(settings.retention_pause_s, stopping)
    return pruned


async def _pause(seconds: float, stopping: asyncio.Event | None) -> None:
    if stopping is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


class RetentionWorker:
    """Prunes the service's rules every `retention_interval_s`; waits out a lost database."""

    def __init__(
        self, pool: asyncpg.Pool, settings: Settings, rules: Sequence[PruneRule] = COMMON_RULES
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._rules = tuple(rules)
        self._stopping = asyncio.Event()
        self.pruned: dict[str, int] = {rule.name: 0 for rule in self._rules}

    def stop(self) -> None:
        """End after the statement in flight."""
        self._stopping.set()

    async def run(self) -> None:
        """Prune now and then every interval, until stopped."""
        database = database_status(self._pool)
        backoff = Backoff(self._settings.database_retry_max_backoff_s)
        while not self._stopping.is_set():
            wait = self._settings.retention_interval_s
            try:
                pruned = await prune_once(self._pool, self._settings, self._rules, self._stopping)
                backoff.reset()
                database.reachable()
                for name, count in pruned.items():
                    self.pruned[name] += count
                if any(pruned.values()):
                    log.info("retention_pruned", **pruned)
            except TRANSIENT_DATABASE_ERRORS as exc:
                database.failed(exc, "retention")
                wait = backoff.next_delay()
                log.warning("retention_failed", error=repr(exc), retry_in=round(wait, 2))
            await _pause(wait, self._stopping)
