"""SQL of the bridge's error queue and alert rules.

Runs on the caller's connection and transaction (see repository.py for the lock order: the
map's row first). Every statement is parameterised.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from services.bridge.domain import AlertAction, AlertRule, ErrorType
from services.common.db import DbConnection
from services.common.errors import NotFound


class UnknownError(NotFound):
    """No error-queue entry with that id."""


@dataclass(frozen=True)
class ErrorEntry:
    """An entry of the error queue, as a retry reads it."""

    id: int
    record_id: UUID | None
    map_name: str
    status: str  # open | retried | resolved
    error_type: ErrorType
    reason: str


async def add_error(
    conn: DbConnection,
    map_name: str,
    record_id: UUID | None,
    error_type: ErrorType,
    reason: str,
    at: datetime,
    *,
    catch_up: bool = False,
) -> int:
    error_id: int = await conn.fetchval(
        "INSERT INTO bridge_error (record_id, map_name, error_type, reason, catch_up, "
        "created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        record_id,
        map_name,
        error_type.value,
        reason,
        catch_up,
        at,
    )
    return error_id


async def add_errors(
    conn: DbConnection,
    map_name: str,
    record_ids: list[UUID],
    error_type: ErrorType,
    reason: str,
    at: datetime,
) -> None:
    """One entry per record, all for the same reason, in one statement (a transaction past the
    platform's limits fails its 1,501 records at once)."""
    await conn.execute(
        "INSERT INTO bridge_error (record_id, map_name, error_type, reason, created_at) "
        "SELECT r, $2, $3, $4, $5 FROM unnest($1::uuid[]) WITH ORDINALITY AS u(r, n) ORDER BY n",
        record_ids,
        map_name,
        error_type.value,
        reason,
        at,
    )


async def get_error(conn: DbConnection, error_id: int) -> ErrorEntry:
    row = await conn.fetchrow(
        "SELECT id, record_id, map_name, status, error_type, reason FROM bridge_error "
        "WHERE id = $1",
        error_id,
    )
    if row is None:
        raise UnknownError(f"no error {error_id}")
    return ErrorEntry(
        row["id"],
        row["record_id"],
        row["map_name"],
        row["status"],
        ErrorType(row["error_type"]),
        row["reason"],
    )


async def mark_error_retried(conn: DbConnection, error_id: int) -> None:
    await conn.execute(
        "UPDATE bridge_error SET status = 'retried', retries = retries + 1, retried_at = now() "
        "WHERE id = $1",
        error_id,
    )


async def resolve_errors_of(conn: DbConnection, record_id: UUID) -> int:
    """The record was applied after all: its open or retried errors are resolved."""
    result: str = await conn.execute(
        "UPDATE bridge_error SET status = 'resolved', resolved_at = now() "
        "WHERE record_id = $1 AND status <> 'resolved'",
        record_id,
    )
    return int(result.split()[-1])


async def resolve_errors_of_many(conn: DbConnection, record_ids: list[UUID]) -> list[UUID]:
    """`resolve_errors_of` for many records; the ids of those that had errors to resolve."""
    rows = await conn.fetch(
        "UPDATE bridge_error SET status = 'resolved', resolved_at = now() "
        "WHERE record_id = ANY($1::uuid[]) AND status <> 'resolved' RETURNING record_id",
        record_ids,
    )
    return list(dict.fromkeys(r["record_id"] for r in rows))


async def error_timestamps(
    conn: DbConnection, map_name: str, since: datetime
) -> dict[ErrorType, list[datetime]]:
    rows = await conn.fetch(
        "SELECT error_type, created_at FROM bridge_error WHERE map_name = $1 AND created_at > $2",
        map_name,
        since,
    )
    result: dict[ErrorType, list[datetime]] = {}
    for row in rows:
        result.setdefault(ErrorType(row["error_type"]), []).append(row["created_at"])
    return result


@dataclass(frozen=True)
class StoredRule:
    id: int
    rule: AlertRule
    last_fired_at: datetime | None


async def alert_rules(conn: DbConnection, map_name: str) -> list[StoredRule]:
    rows = await conn.fetch(
        "SELECT * FROM bridge_alert_rule WHERE map_name = $1 ORDER BY id", map_name
    )
    return [_stored_rule(r) for r in rows]


def _stored_rule(row: Any) -> StoredRule:
    return StoredRule(
        id=row["id"],
        rule=AlertRule(
            map_name=row["map_name"],
            error_type=ErrorType(row["error_type"]),
            count=row["error_count"],
            window=timedelta(seconds=row["window_s"]),
            action=AlertAction(row["action"]),
        ),
        last_fired_at=row["last_fired_at"],
    )


async def lock_alert_rule(conn: DbConnection, rule_id: int) -> StoredRule:
    """One rule, locked for an edit in the caller's transaction; NotFound when unknown."""
    row = await conn.fetchrow("SELECT * FROM bridge_alert_rule WHERE id = $1 FOR UPDATE", rule_id)
    if row is None:
        raise NotFound(f"no alert rule {rule_id}")
    return _stored_rule(row)


async def update_alert_rule(conn: DbConnection, rule_id: int, rule: AlertRule) -> None:
    """Store a rule's new error type, count, window and action."""
    await conn.execute(
        "UPDATE bridge_alert_rule SET error_type = $2, error_count = $3, window_s = $4, "
        "action = $5 WHERE id = $1",
        rule_id,
        rule.error_type.value,
        rule.count,
        rule.window.total_seconds(),
        rule.action.value,
    )


async def mark_rule_fired(conn: DbConnection, rule_id: int, at: datetime) -> None:
    await conn.execute("UPDATE bridge_alert_rule SET last_fired_at = $2 WHERE id = $1", rule_id, at)
