"""SQL of the bridge: map state, records, paused queue and activity log (the error queue and
alert rules are in error_repository.py, the admin API's read views in queries.py).

Every function runs on the caller's connection (and, where it writes, inside the caller's
transaction): the handler decides what belongs to one transaction. Every statement is
parameterised.

Ordering: everything that reads or changes a map's state, its queue or its records takes the
map row's lock first (`lock_map`). One event touches one map only, so the lock order can never
cross and two transactions cannot deadlock on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from services.bridge.domain import (
    AlertRule,
    MapState,
    SyncStatus,
)
from services.bridge.mapping import (
    TableMap,
)
from services.bridge.records import BridgeRecord, QueueFigures
from services.common.db import DbConnection
from services.common.errors import NotFound
from services.common.metrics import ROUND_TRIP_BUCKETS, RoundTripCount


class UnknownMap(NotFound):
    """No table map of that name or slug."""


class UnknownRecord(NotFound):
    """No bridge record with that id."""


@dataclass(frozen=True)
class MapRow:
    name: str
    slug: str
    version: str
    state: MapState
    state_changed_at: datetime


@dataclass(frozen=True)
class QueuedRecord:
    """A record in a map's paused queue, at its place."""

    queue_seq: int
    bytes: int
    queued_at: datetime
    record: BridgeRecord


# --------------------------------------------------------------------------------------------
# Maps


async def seed_maps(
    conn: DbConnection,
    maps: tuple[TableMap, ...],
    slugs: dict[str, str],
    rules: tuple[AlertRule, ...],
) -> None:
    """Create the maps (running, so the flow works out of the box) and their default rules.

    Existing rows keep their state: a restart never resets a map an administrator paused.
    """
    async with conn.transaction():
        for table_map in maps:
            inserted = await conn.fetchval(
                "INSERT INTO bridge_map (name, slug, version, state) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (name) DO NOTHING RETURNING true",
                table_map.name,
                slugs[table_map.name],
                table_map.version,
                MapState.RUNNING.value,
            )
            if inserted:
                await add_activity(
                    conn, table_map.name, "state_changed", "map created in state running"
                )
        for rule in rules:
            await conn.execute(
                "INSERT INTO bridge_alert_rule (map_name, error_type, error_count, window_s, "
                "action) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                rule.map_name,
                rule.error_type.value,
                rule.count,
                rule.window.total_seconds(),
                rule.action.value,
            )


def _map_row(row: Any) -> MapRow:
    return MapRow(
        name=row["name"],
        slug=row["slug"],
        version=row["version"],
        state=MapState(row["state"]),
        state_changed_at=row["state_changed_at"],
    )


async def list_maps(conn: DbConnection) -> list[MapRow]:
    rows = await conn.fetch("SELECT * FROM bridge_map ORDER BY name")
    return [_map_row(r) for r in rows]


async def get_map(conn: DbConnection, name_or_slug: str) -> MapRow:
    row = await conn.fetchrow("SELECT * FROM bridge_map WHERE name = $1 OR slug = $1", name_or_slug)
    if row is None:
        raise UnknownMap(f"no table map '{name_or_slug}'")
    return _map_row(row)


async def lock_map(conn: DbConnection, name: str) -> MapRow:
    """The map's row, locked until the transaction ends (see the module docstring)."""
    row = await conn.fetchrow("SELECT * FROM bridge_map WHERE name = $1 FOR UPDATE", name)
    if row is None:
        raise UnknownMap(f"no table map '{name}'")
    return _map_row(row)


async def set_map_state(conn: DbConnection, name: str, state: MapState) -> None:
    await conn.execute(
        "UPDATE bridge_map SET state = $2, state_changed_at = now() WHERE name = $1",
        name,
        state.value,
    )


async def change_map_state(
    conn: DbConnection, name: str, old: MapState, new: MapState, *, by: str, message: str
) -> None:
    """The map moves from `old` to `new` (decided by `domain.transition`), in the activity log
    with who moved it (administrator, alert rule, bridge)."""
    await set_map_state(conn, name, new)
    await add_activity(
        conn,
        name,
        "state_changed",
        message,
        detail={"from": old.value, "to": new.value, "by": by},
    )


async def maps_in_states(conn: DbConnection, states: tuple[MapState, ...]) -> list[str]:
    rows = await conn.fetch(
        "SELECT name FROM bridge_map WHERE state = ANY($1::text[]) ORDER BY name",
        [s.value for s in states],
    )
    return [r["name"] for r in rows]


# --------------------------------------------------------------------------------------------
# Records


def _record(row: Any) -> BridgeRecord:
    """A `bridge_record` row (whole, or the state columns of `_RECORD_STATE`) as a record."""
    return BridgeRecord(
        record_id=row["record_id"],
        map_name=row["map_name"],
        leg_name=row["leg_name"],
        source_topic=row["source_topic"],
        source_event_id=row["source_event_id"],
        record_key=row["record_key"],
        message_key=row["message_key"],
        target_topic=row["target_topic"],
        invoice_id=row["invoice_id"],
        correlation_id=row["correlation_id"],
        status=SyncStatus(row["status"]),
        reason=row["reason"],
        source_record=row.get("source_record"),
        payload=row.get("payload"),
        attempts=row["attempts"],
        sent_in_catch_up=row["sent_in_catch_up"],
    )


async def insert_record(conn: DbConnection, record: BridgeRecord) -> bool:
    """Insert a record; False when it exists already (the same source event, seen again)."""
    return bool(await insert_records(conn, [record]))


async def insert_records(
    conn: DbConnection, records: list[BridgeRecord], *, sent: bool = False
) -> set[UUID]:
    """Insert records in one statement, in list order; the ids of those inserted (a record
    seen before is left as it is). `sent`: they go to the outbox now (first attempt)."""
    # The batch as one JSON document (one `json.dumps`, in C) rather than fourteen typed arrays,
    # whose encoding checks the type of every element: 43 against 57 µs of the bridge's CPU
    # per record, measured on 41-record batches (an invoice of 20 lines).
    rows = await conn.fetch(
        "INSERT INTO bridge_record (record_id, map_name, leg_name, source_topic, "
        "source_event_id, record_key, message_key, target_topic, invoice_id, correlation_id, "
        "status, reason, source_record, payload, attempts, last_sent_at) "
        "SELECT r.id, r.map, r.leg, r.src, r.ev, r.rkey, r.mkey, r.tgt, r.inv, r.corr, "
        "r.status, r.reason, r.rec, r.pay, CASE WHEN $2 THEN 1 ELSE 0 END, "
        "CASE WHEN $2 THEN now() END "
        "FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (id uuid, map text, leg text, "
        "src text, ev uuid, rkey text, mkey text, tgt text, inv text, corr text, status text, "
        "reason text, rec jsonb, pay jsonb)) WITH ORDINALITY AS r(id, map, leg, src, ev, rkey, "
        "mkey, tgt, inv, corr, status, reason, rec, pay, ord) ORDER BY r.ord "
        "ON CONFLICT (record_id) DO NOTHING RETURNING record_id",
        [
            {
                "id": str(r.record_id),
                "map": r.map_name,
                "leg": r.leg_name,
                "src": r.source_topic,
                "ev": str(r.source_event_id),
                "rkey": r.record_key,
                "mkey": r.message_key,
                "tgt": r.target_topic,
                "inv": r.invoice_id,
                "corr": r.correlation_id,
                "status": r.status.value,
                "reason": r.reason,
                "rec": r.source_record,
                "pay": r.payload,
            }
            for r in records
        ],
        sent,
    )
    return {r["record_id"] for r in rows}


# A record without its two JSON documents (source record and payload): what settling a receipt
# reads, thousands of rows at a time, where decoding the documents was most of the cost.
_RECORD_STATE = (
    "record_id, map_name, leg_name, source_topic, source_event_id, record_key, message_key, "
    "target_topic, invoice_id, correlation_id, status, reason, attempts, sent_in_catch_up"
)


async def records_by_id(
    conn: DbConnection, record_ids: list[UUID], *, lock: bool = False
) -> dict[UUID, BridgeRecord]:
    """The records with these ids that exist, without their source record and payload;
    locked (in id order) when asked."""
    sql = (
        f"SELECT {_RECORD_STATE} FROM bridge_record WHERE record_id = ANY($1::uuid[]) "
        "ORDER BY record_id"
    )
    rows = await conn.fetch(sql + (" FOR UPDATE" if lock else ""), record_ids)
    return {r["record_id"]: _record(r) for r in rows}


async def set_records_synced(conn: DbConnection, record_ids: list[UUID]) -> list[RoundTripCount]:
    """The target applied these records; their round trips (from each one's last send to now)
    counted per map and bucket of `ROUND_TRIP_BUCKETS` (Prometheus' `le`), for the receipt
    histogram: a few rows back, however large the batch."""
    rows = await conn.fetch(
        "WITH synced AS (UPDATE bridge_record SET status = 'synced', reason = NULL, "
        "updated_at = now(), synced_at = now() WHERE record_id = ANY($1::uuid[]) "
        "RETURNING map_name, extract(epoch FROM now() - last_sent_at)::float8 AS seconds) "
        # width_bucket counts the thresholds at or below its operand. Over the bounds negated
        # (ascending again), that is the bounds at or above the round trip; the rest lie below
        # it, and their number is the index of its bucket, the first bound it does not exceed.
        "SELECT map_name, cardinality($2::float8[]) - width_bucket(-seconds, $2::float8[]) "
        "AS bucket, count(*) AS records, sum(seconds) AS seconds FROM synced "
        "WHERE seconds IS NOT NULL GROUP BY 1, 2",
        record_ids,
        [-b for b in reversed(ROUND_TRIP_BUCKETS)],
    )
    return [RoundTripCount(r["map_name"], r["bucket"], r["records"], r["seconds"]) for r in rows]


async def record_tally(conn: DbConnection) -> dict[tuple[str, str], int]:
    """Records by (map, status), as the triggers of migration 004 keep them (a few rows)."""
    rows = await conn.fetch("SELECT map_name, status, records FROM bridge_record_tally")
    return {(r["map_name"], r["status"]): r["records"] for r in rows}


async def get_record(conn: DbConnection, record_id: UUID, *, lock: bool = False) -> BridgeRecord:
    sql = "SELECT * FROM bridge_record WHERE record_id = $1" + (" FOR UPDATE" if lock else "")
    row = await conn.fetchrow(sql, record_id)
    if row is None:
        raise UnknownRecord(f"no bridge record {record_id}")
    return _record(row)


async def save_status(conn: DbConnection, record: BridgeRecord) -> None:
    """Write the record's status, reason and payload (a transition the caller decided)."""
    await set_record_status(conn, record.record_id, record.status, record.reason, record.payload)


async def set_record_status(
    conn: DbConnection,
    record_id: UUID,
    status: SyncStatus,
    reason: str | None = None,
    payload: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        "UPDATE bridge_record SET status = $2, reason = $3, "
        "payload = COALESCE($4, payload), updated_at = now(), "
        "synced_at = CASE WHEN $2 = 'synced' THEN now() ELSE synced_at END "
        "WHERE record_id = $1",
        record_id,
        status.value,
        reason,
        payload,
    )


async def mark_sent(
    conn: DbConnection, record_ids: list[UUID], in_catch_up: list[bool]
) -> dict[UUID, int]:
    """The records went to the outbox once more: pending, attempts + 1, each with its
    catch-up flag, in one statement (a resume re-sends thousands). Returns their attempts."""
    rows = await conn.fetch(
        "UPDATE bridge_record r SET status = 'pending', reason = NULL, "
        "attempts = r.attempts + 1, last_sent_at = now(), updated_at = now(), "
        "sent_in_catch_up = u.catch_up "
        "FROM unnest($1::uuid[], $2::boolean[]) AS u(record_id, catch_up) "
        "WHERE r.record_id = u.record_id RETURNING r.record_id, r.attempts",
        record_ids,
        in_catch_up,
    )
    return {r["record_id"]: r["attempts"] for r in rows}


# A map's ($1) pending records with no receipt for an interval ($2): what the re-drive sends.
_OVERDUE = "map_name = $1 AND status = 'pending' AND last_sent_at < now() - $2::interval"


async def has_overdue(conn: DbConnection, map_name: str, overdue_after: timedelta) -> bool:
    """Whether the map has a pending record without a receipt for `overdue_after` (no lock)."""
    found: bool = await conn.fetchval(
        f"SELECT EXISTS (SELECT FROM bridge_record WHERE {_OVERDUE})",
        map_name,
        overdue_after,
    )
    return found


async def overdue_pending(
    conn: DbConnection, map_name: str, overdue_after: timedelta, limit: int
) -> list[BridgeRecord]:
    """Pending records of the map with no receipt for `overdue_after`, oldest first, locked."""
    rows = await conn.fetch(
        f"SELECT * FROM bridge_record WHERE {_OVERDUE} ORDER BY seq LIMIT $3 "
        "FOR UPDATE SKIP LOCKED",
        map_name,
        overdue_after,
        limit,
    )
    return [_record(r) for r in rows]


async def held_records(conn: DbConnection, map_name: str) -> list[BridgeRecord]:
    """Records held as not synced while the map was stopped, in arrival order."""
    rows = await conn.fetch(
        "SELECT * FROM bridge_record WHERE map_name = $1 AND status = 'not_synced' ORDER BY seq",
        map_name,
    )
    return [_record(r) for r in rows]


# --------------------------------------------------------------------------------------------
# Paused queue


async def queue_figures(conn: DbConnection, map_name: str) -> QueueFigures:
    row = await conn.fetchrow(
        "SELECT count(*) AS n, COALESCE(sum(bytes), 0) AS bytes, min(queued_at) AS oldest "
        "FROM bridge_queue WHERE map_name = $1",
        map_name,
    )
    assert row is not None
    return QueueFigures(count=row["n"], bytes=int(row["bytes"]), oldest=row["oldest"])


async def enqueue(conn: DbConnection, record: BridgeRecord) -> None:
    """The record joins the end of its map's queue, weighing its payload's size."""
    await conn.execute(
        "INSERT INTO bridge_queue (map_name, record_id, bytes) VALUES ($1, $2, $3)",
        record.map_name,
        record.record_id,
        record.queue_bytes,
    )


async def queue_head(conn: DbConnection, map_name: str, limit: int) -> list[QueuedRecord]:
    """The oldest queued records of the map, in queue order, with their record rows."""
    rows = await conn.fetch(
        "SELECT q.seq AS queue_seq, q.bytes, q.queued_at, r.* FROM bridge_queue q "
        "JOIN bridge_record r USING (record_id) WHERE q.map_name = $1 ORDER BY q.seq LIMIT $2",
        map_name,
        limit,
    )
    return [QueuedRecord(r["queue_seq"], r["bytes"], r["queued_at"], _record(r)) for r in rows]


async def dequeue(conn: DbConnection, queue_seqs: list[int]) -> None:
    await conn.execute("DELETE FROM bridge_queue WHERE seq = ANY($1::bigint[])", queue_seqs)


# --------------------------------------------------------------------------------------------
# Activity log


async def add_activity(
    conn: DbConnection,
    map_name: str | None,
    kind: str,
    message: str,
    *,
    invoice_id: str | None = None,
    record_id: UUID | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO bridge_activity (map_name, kind, message, invoice_id, record_id, detail) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        map_name,
        kind,
        message,
        invoice_id,
        record_id,
        None if detail is None else json.loads(json.dumps(detail, default=str)),
    )
