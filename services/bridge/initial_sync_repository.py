"""SQL of the initial sync's runs (migration 007). Runs on the caller's connection and
transaction, after the map's row lock (repository.py's lock order)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from services.bridge.initial_sync import IN_FLIGHT, InitialSyncRun, RunFigures, RunStatus
from services.common.db import DbConnection


async def insert_run(
    conn: DbConnection, run_id: UUID, map_name: str, legal_entities: Sequence[str]
) -> None:
    """A new run, requested now."""
    await conn.execute(
        "INSERT INTO bridge_initial_sync (run_id, map_name, legal_entities) VALUES ($1, $2, $3)",
        run_id,
        map_name,
        list(legal_entities),
    )


async def set_held_superseded(conn: DbConnection, run_id: UUID, count: int) -> None:
    """How many records held while the map was stopped the run's snapshot replaces."""
    await conn.execute(
        "UPDATE bridge_initial_sync SET held_superseded = $2 WHERE run_id = $1", run_id, count
    )


async def run_exists(conn: DbConnection, run_id: UUID, map_name: str) -> bool:
    """Whether this map asked for the snapshot `run_id`."""
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT FROM bridge_initial_sync WHERE run_id = $1 AND map_name = $2)",
        run_id,
        map_name,
    )
    return found


async def note_rows(
    conn: DbConnection,
    run_id: UUID,
    expected: int,
    received: int,
    already_synced: int,
    filtered: int = 0,
) -> None:
    """Snapshot rows arrived: the snapshot's size, and what arrived, was there already and
    was filtered out (a filtered row leaves no record, so the run counts it here)."""
    await conn.execute(
        "UPDATE bridge_initial_sync SET rows_expected = $2, "
        "rows_received = rows_received + $3, rows_already_synced = rows_already_synced + $4, "
        "rows_filtered = rows_filtered + $5, "
        "status = CASE WHEN status = 'requested' THEN 'running' ELSE status END "
        "WHERE run_id = $1",
        run_id,
        expected,
        received,
        already_synced,
        filtered,
    )


async def link_records(conn: DbConnection, run_id: UUID, record_ids: Sequence[UUID]) -> None:
    """The records the run brought (a redelivered snapshot message links nothing new)."""
    if not record_ids:
        return
    await conn.execute(
        "INSERT INTO bridge_initial_sync_record (run_id, record_id) "
        "SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING",
        run_id,
        list(record_ids),
    )


async def keys_already_there(
    conn: DbConnection, map_name: str, keys: Sequence[tuple[str, str]], statuses: Sequence[str]
) -> set[tuple[str, str]]:
    """Of these (leg, record key) pairs, those the map holds a record of in `statuses`."""
    if not keys:
        return set()
    rows = await conn.fetch(
        "SELECT DISTINCT r.leg_name, r.record_key FROM bridge_record r "
        "JOIN unnest($2::text[], $3::text[]) AS k(leg_name, record_key) "
        "ON r.leg_name = k.leg_name AND r.record_key = k.record_key "
        "WHERE r.map_name = $1 AND r.status = ANY($4::text[])",
        map_name,
        [leg for leg, _ in keys],
        [key for _, key in keys],
        list(statuses),
    )
    return {(r["leg_name"], r["record_key"]) for r in rows}


_RUNS = (
    "SELECT s.*, "
    "count(r.record_id) FILTER (WHERE r.attempts > 0) AS sent, "
    "count(r.record_id) FILTER (WHERE r.status = 'synced') AS synced, "
    "count(r.record_id) FILTER (WHERE r.status = 'failed') AS failed, "
    "count(r.record_id) FILTER (WHERE r.status = ANY($2::text[])) AS in_flight "
    "FROM bridge_initial_sync s "
    "LEFT JOIN bridge_initial_sync_record l ON l.run_id = s.run_id "
    "LEFT JOIN bridge_record r ON r.record_id = l.record_id "
    "WHERE s.map_name = $1 GROUP BY s.run_id ORDER BY s.requested_at, s.run_id"
)


def _run(row: Any) -> InitialSyncRun:
    return InitialSyncRun(
        run_id=row["run_id"],
        map_name=row["map_name"],
        legal_entities=tuple(row["legal_entities"]),
        requested_at=row["requested_at"],
        status=RunStatus(row["status"]),
        rows_expected=row["rows_expected"],
        rows_received=row["rows_received"],
        rows_already_synced=row["rows_already_synced"],
        held_superseded=row["held_superseded"],
        finished_at=row["finished_at"],
        figures=RunFigures(
            sent=row["sent"],
            synced=row["synced"],
            failed=row["failed"],
            filtered=row["rows_filtered"],
            in_flight=row["in_flight"],
        ),
    )


async def runs_of_map(conn: DbConnection, map_name: str) -> list[InitialSyncRun]:
    """Every run of the map's initial sync, oldest first, with its figures."""
    rows = await conn.fetch(_RUNS, map_name, [s.value for s in IN_FLIGHT])
    return [_run(r) for r in rows]


async def save_status(conn: DbConnection, run: InitialSyncRun, before: RunStatus) -> bool:
    """Write a run's status and finish time (as `InitialSyncRun.settled` decided), if it is
    still `before`; False when another reader settled it first (it logs the finish once)."""
    changed = await conn.fetchval(
        "UPDATE bridge_initial_sync SET status = $2, finished_at = $3 "
        "WHERE run_id = $1 AND status = $4 RETURNING true",
        run.run_id,
        run.status.value,
        run.finished_at,
        before.value,
    )
    return bool(changed)
