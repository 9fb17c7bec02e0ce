"""The bridge's use cases: an administrator's actions and the periodic workers' rounds.

- `change_state`: run, pause, resume or stop a table map (run carries the records held while
  it was stopped into the initial sync; resume re-sends what was never answered);
- `drain_queue`: the catch-up after resume or run, batch by batch, in order;
- `redrive`: re-send pending records whose receipt is overdue (a time-out is an error);
- `retry_errors`: map the records behind errors again and let them arrive at their map anew.

Each is one transaction that takes the map's row lock first (repository.py), decides through
the pure rules (`domain.py`, `records.py`) and writes through the repository.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final
from uuid import UUID, uuid4

import asyncpg

from schemas.initial_sync import InitialSyncRequested, SnapshotTable
from schemas.topics import Topic, topic_name
from services.bridge import error_repository as errors_repo
from services.bridge import filtered_repository as filtered_repo
from services.bridge import initial_sync_repository as sync_repo
from services.bridge import repository as repo
from services.bridge.domain import (
    BridgeRuleError,
    ErrorType,
    MapAction,
    MapState,
    PlatformLimits,
    RecordStatus,
    SourceTransaction,
    SyncStatus,
    transaction_breach,
    transition,
)
from services.bridge.initial_sync import InitialSyncRun
from services.bridge.intake import Intake
from services.bridge.mapping import (
    TableMap,
)
from services.bridge.records import BridgeRecord, count_filtered, remap, time_out_reason
from services.bridge.table_maps import ACTUALS_MAP_NAME, PROPOSAL_MAP_NAME, TABLE_MAPS
from services.common import outbox
from services.common.db import DbConnection
from services.common.logging import get_logger

log = get_logger(__name__)

# Short names an administrator may use instead of a map's full name.
MAP_SLUGS: Final[dict[str, str]] = {PROPOSAL_MAP_NAME: "invoices", ACTUALS_MAP_NAME: "actuals"}
MAPS_BY_NAME: Final[dict[str, TableMap]] = {m.name: m for m in TABLE_MAPS}


class RecordNotRetryable(BridgeRuleError):
    """An error-queue entry that cannot be retried (resolved already, or without a record)."""


class InitialSyncRefused(BridgeRuleError):
    """An initial sync the map's state does not allow (paused, or catching up)."""


# What each map's initial sync copies from its master side (Dataverse, for both maps).
SNAPSHOT_TABLES: Final[dict[str, SnapshotTable]] = {
    PROPOSAL_MAP_NAME: SnapshotTable.CONFIRMED_INVOICES,
    ACTUALS_MAP_NAME: SnapshotTable.ACTUALS,
}
HELD_SUPERSEDED: Final = "superseded by initial sync {run_id}: the snapshot carries the row"


class BridgeCommands:
    """The bridge's use cases, each in a transaction of its own on the pool."""

    def __init__(self, pool: asyncpg.Pool, intake: Intake) -> None:
        self.pool = pool
        self.intake = intake

    async def change_state(self, name_or_slug: str, action: MapAction) -> repo.MapRow:
        """run / pause / resume / stop; refused actions raise MapActionRefused (409)."""
        async with self.pool.acquire() as conn, conn.transaction():
            found = await repo.get_map(conn, name_or_slug)
            row = await repo.lock_map(conn, found.name)
            new = await _administrator_moves(conn, row, action, action.value)
            if action is MapAction.RUN:
                # The initial sync carries what arrived while the map was stopped, in order:
                # the held records arrive again, at a map that now queues them.
                held = await repo.held_records(conn, row.name)
                await self.intake.arrive_all(conn, row.name, new, held, new=False)
                await repo.add_activity(
                    conn,
                    row.name,
                    "initial_sync_started",
                    f"initial sync of {len(held)} held records started",
                    detail={"records": len(held)},
                )
            elif action is MapAction.RESUME:
                await self._resend_unanswered(conn, row.name)
            log.info("map_state_changed", map=row.name, action=action.value, state=new.value)
            return await repo.get_map(conn, row.name)

    async def start_initial_sync(
        self, name_or_slug: str, legal_entities: list[str] | None = None
    ) -> InitialSyncRun:
        """Start (on a stopped map) or re-run (on a running one) the map's initial sync;
        returns the new run.

        The bridge asks Dataverse for a snapshot through the signal topic, in this
        transaction (outbox): a run is never recorded without its request, nor requested
        twice. A stopped map runs (initializing, then running once its queue is drained), and
        the records it held while stopped are superseded, not replayed: the snapshot reads
        the rows as they are now. A paused or catching-up map is refused (409): resume it
        first, as its queue comes before anything else.
        """
        entities = sorted(set(legal_entities or []))
        async with self.pool.acquire() as conn, conn.transaction():
            found = await repo.get_map(conn, name_or_slug)
            row = await repo.lock_map(conn, found.name)
            if row.state not in (MapState.NOT_RUNNING, MapState.RUNNING):
                raise InitialSyncRefused(
                    f"cannot start an initial sync of map '{row.name}' while it is "
                    f"{row.state.value}: resume it and let it catch up first"
                )
            run_id = uuid4()
            now = datetime.now(UTC)
            breach = transaction_breach(
                SourceTransaction(run_id, 0, len(entities), now), now, initial_sync=True
            )
            if breach is not None and self.intake.platform_limits is PlatformLimits.MICROSOFT:
                # Microsoft's initial sync takes at most 40 legal entities at once; a request
                # for every legal entity (none named) is not held against it here, as the
                # bridge does not know how many Dataverse has.
                raise InitialSyncRefused(f"{breach}; name fewer legal entities per run")
            await sync_repo.insert_run(conn, run_id, row.name, entities)
            if row.state is MapState.NOT_RUNNING:
                await _administrator_moves(conn, row, MapAction.RUN, "initial sync")
                held = await repo.held_records(conn, row.name)
                reason = HELD_SUPERSEDED.format(run_id=run_id)
                await _filter_stored(conn, [r.becomes(RecordStatus.filtered(reason)) for r in held])
                await sync_repo.set_held_superseded(conn, run_id, len(held))
            request = InitialSyncRequested(
                snapshot_id=run_id,
                map_name=row.name,
                table=SNAPSHOT_TABLES[row.name],
                legal_entities=entities,
            )
            await outbox.add(
                conn,
                topic_name(Topic.INITIAL_SYNC_REQUESTED, self.intake.sender.topic_prefix),
                row.name,
                outbox.envelope("initial_sync.requested", "bridge", request),
            )
            await repo.add_activity(
                conn,
                row.name,
                "initial_sync_requested",
                f"initial sync {run_id} requested: snapshot of {request.table.value} "
                f"({', '.join(entities) or 'every legal entity'})",
                detail={"run_id": str(run_id), "legal_entities": entities},
            )
            log.info("initial_sync_requested", map=row.name, run_id=str(run_id))
            [run] = [r for r in await sync_repo.runs_of_map(conn, row.name) if r.run_id == run_id]
            return run

    async def initial_sync_runs(self, name_or_slug: str) -> list[InitialSyncRun]:
        """The map's initial-sync runs, oldest first, each with its figures; a run found over
        is written as such (status, finish time) and logged in the activity log once."""
        async with self.pool.acquire() as conn, conn.transaction():
            found = await repo.get_map(conn, name_or_slug)
            runs = await sync_repo.runs_of_map(conn, found.name)
            now = datetime.now(UTC)
            settled: list[InitialSyncRun] = []
            for run in runs:
                after = run.settled(now)
                if after is not run:
                    changed = await sync_repo.save_status(conn, after, run.status)
                    if changed and after.finished_at is not None:
                        await repo.add_activity(
                            conn,
                            after.map_name,
                            "initial_sync_finished",
                            f"initial sync {after.run_id} {after.status.value}: "
                            f"{after.rows_received} rows received, {after.figures.sent} sent, "
                            f"{after.figures.failed} failed",
                            detail=after.as_json(),
                        )
                settled.append(after)
            return settled

    async def _resend_unanswered(self, conn: DbConnection, map_name: str) -> None:
        """On resume, records sent before the pause and never answered go again first (they
        came before anything queued): the target is presumably back, and as re-sends their
        time-outs no longer count as new errors that would pause the map at once."""
        unanswered = await repo.overdue_pending(conn, map_name, timedelta(0), 100_000)
        await self.intake.sender.send(conn, unanswered, in_catch_up=True)
        if unanswered:
            await repo.add_activity(
                conn,
                map_name,
                "redrive",
                f"{len(unanswered)} unanswered records re-sent on resume",
                detail={"records": [str(r.record_id) for r in unanswered[:50]]},
            )
        figures = await repo.queue_figures(conn, map_name)
        await repo.add_activity(
            conn,
            map_name,
            "catch_up_started",
            f"catch-up of {figures.count} queued records started",
            detail={"records": figures.count, "bytes": figures.bytes},
        )

    async def drain_queue(self, map_name: str, batch: int) -> bool:
        """Send the next batch of a resuming or initializing map's queue, in order.

        When the queue is empty the map is running again. Arrivals of the map take the same
        row lock and queue while the map is not running, so "empty" here is final: nothing
        can slip in between the last send and the state change. True when more remain.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            row = await repo.lock_map(conn, map_name)
            if row.state not in (MapState.RESUMING, MapState.INITIALIZING):
                return False
            head = await repo.queue_head(conn, map_name, batch)
            await self.intake.sender.send(conn, [q.record for q in head], in_catch_up=True)
            if head:
                await repo.dequeue(conn, [q.queue_seq for q in head])
            if len(head) == batch:
                return True
            action = (
                MapAction.CAUGHT_UP if row.state is MapState.RESUMING else MapAction.INITIALIZED
            )
            new = transition(row.state, action, map_name=map_name)
            kind = "catch_up_finished" if action is MapAction.CAUGHT_UP else "initial_sync_finished"
            await repo.add_activity(
                conn,
                map_name,
                kind,
                f"queue drained; {row.state.value} -> {new.value}",
                detail={"from": row.state.value, "to": new.value},
            )
            await repo.change_map_state(
                conn,
                map_name,
                row.state,
                new,
                by="bridge",
                message=f"{row.state.value} -> {new.value}",
            )
            log.info("map_state_changed", map=map_name, action=action.value, state=new.value)
            return False

    async def redrive(self, map_name: str, overdue_after: timedelta, batch: int) -> int:
        """Re-send the running map's pending records whose receipt is overdue."""
        async with self.pool.acquire() as conn, conn.transaction():
            # Look before taking the map's lock, which every record arriving for the map
            # needs: most ticks find nothing overdue, and a later tick sees what this missed.
            if not await repo.has_overdue(conn, map_name, overdue_after):
                return 0
            row = await repo.lock_map(conn, map_name)
            if row.state is not MapState.RUNNING:
                return 0
            overdue = await repo.overdue_pending(conn, map_name, overdue_after, batch)
            for record in overdue:
                reason = time_out_reason(record, overdue_after)
                if reason is not None:
                    await self.intake.errors.add(conn, record, ErrorType.TIMEOUT, reason)
            await self.intake.sender.send(conn, overdue, in_catch_up=None)
            if overdue:
                await repo.add_activity(
                    conn,
                    map_name,
                    "redrive",
                    f"{len(overdue)} pending records re-sent: no receipt within {overdue_after}",
                    detail={"records": [str(r.record_id) for r in overdue[:50]]},
                )
                log.info("records_redriven", map=map_name, count=len(overdue))
            return len(overdue)

    async def retry_errors(self, error_ids: list[int]) -> list[dict[str, Any]]:
        """Retry the records behind these errors, each record once, in error order."""
        results: list[dict[str, Any]] = []
        async with self.pool.acquire() as conn, conn.transaction():
            errors = [await errors_repo.get_error(conn, i) for i in error_ids]
            done: set[UUID] = set()
            for error in errors:
                if error.status == "resolved":
                    raise RecordNotRetryable(f"error {error.id} is resolved already")
                if error.record_id is None:
                    raise RecordNotRetryable(f"error {error.id} has no record to retry")
                if error.record_id in done:
                    await errors_repo.mark_error_retried(conn, error.id)
                    continue
                done.add(error.record_id)
                outcome = await self._retry_record(conn, error, error.record_id)
                results.append({"error_id": error.id, **outcome})
        return results

    async def _retry_record(
        self, conn: DbConnection, error: errors_repo.ErrorEntry, record_id: UUID
    ) -> dict[str, Any]:
        map_row = await repo.lock_map(conn, error.map_name)
        record = await repo.get_record(conn, record_id, lock=True)
        await errors_repo.mark_error_retried(conn, error.id)
        result: dict[str, Any] = {
            "record_id": str(record.record_id),
            "record_key": record.record_key,
        }
        if record.status in (SyncStatus.SYNCED, SyncStatus.FILTERED):
            # Nothing to send: applied, or left out (and counted) already.
            await errors_repo.resolve_errors_of(conn, record.record_id)
            return {**result, "status": record.status.value}
        if record.status is SyncStatus.QUEUED:
            # Retried once already while its map is paused: it waits in the map's queue, and
            # the queue holds a record once; resuming the map sends it.
            raise RecordNotRetryable(
                f"record {record.record_key} is queued already: map {record.map_name} "
                f"is {map_row.state.value}; it is sent when the map resumes"
            )
        await repo.add_activity(
            conn,
            record.map_name,
            "retry",
            f"record {record.record_key} retried by administrator (error {error.id})",
            invoice_id=record.invoice_id,
            record_id=record.record_id,
            detail={"error_id": error.id},
        )
        remapped = remap(record, MAPS_BY_NAME[record.map_name])
        if (
            error.error_type is ErrorType.PLATFORM_LIMIT
            and self.intake.platform_limits is PlatformLimits.MICROSOFT
            and remapped.status is SyncStatus.PENDING
        ):
            # Its source transaction is as big as it was: the platform refuses it again. What
            # helps is what helps in production (fewer lines per invoice, or the asynchronous
            # mode: platform_limits=none), then a retry.
            after = record.fails(error.reason)
            await self.intake.errors.fail(conn, after, ErrorType.PLATFORM_LIMIT)
        elif remapped.status is SyncStatus.FILTERED:
            await _filter_stored(conn, [remapped])
            after = remapped
        elif remapped.status is SyncStatus.FAILED:
            await self.intake.errors.fail(conn, remapped, ErrorType.MAPPING)
            after = remapped
        else:
            [after] = await self.intake.arrive_all(
                conn, record.map_name, map_row.state, [remapped], new=False
            )
        result["status"] = after.status.value
        if after.status in (SyncStatus.FAILED, SyncStatus.NOT_SYNCED, SyncStatus.FILTERED):
            result["reason"] = after.reason
        return result


async def _filter_stored(conn: DbConnection, records: list[BridgeRecord]) -> None:
    """Stored records that became filtered (their map's filter leaves them out now, or an
    initial sync's snapshot supersedes them): each keeps its row, now filtered with its
    reason, is counted with the filtered source rows, and its open errors are resolved.

    Why keep the row, when a row filtered at intake leaves none: a stored record has a past
    that people and tools point at (error-queue entries by foreign key, activity-log lines,
    an initial sync's links, a receipt still on its way); deleting it would cut those. It is
    counted as well, so every filtered figure (`/stats`, `/filtered`, metrics) reads the
    counts alone. Once: a filtered record is never re-mapped again (a retry of its errors
    finds it filtered, see `_retry_record`), and the map's lock is held.
    """
    if not records:
        return
    for record in records:
        await repo.save_status(conn, record)
    await filtered_repo.add_counts(conn, count_filtered(records))
    await errors_repo.resolve_errors_of_many(conn, [r.record_id for r in records])


async def _administrator_moves(conn: DbConnection, row: Any, action: MapAction, why: str) -> Any:
    """The map's state after the administrator's `action` (refused as `transition` says),
    written with its activity entry; returns the new state."""
    new = transition(row.state, action, map_name=row.name)
    await repo.change_map_state(
        conn,
        row.name,
        row.state,
        new,
        by="administrator",
        message=f"{row.state.value} -> {new.value} by administrator ({why})",
    )
    return new
