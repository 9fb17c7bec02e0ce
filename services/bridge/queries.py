"""Read views of the bridge's state for the admin API: records, errors, alert rules, activity
and per-map figures, as rows of every column. Nothing here writes; the commands read through
`repository.py` and `error_repository.py`, which return typed records.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from services.bridge import filtered_repository as filtered_repo
from services.bridge.domain import SyncStatus
from services.bridge.repository import UnknownRecord, list_maps
from services.common.db import DbConnection
from services.common.errors import NotFound

# `/stats` keys: source transactions past Microsoft's live-sync limits, per map.
TRANSACTIONS_FAILED = "transactions_failed_platform_limits"
TRANSACTIONS_WOULD_FAIL = "transactions_would_fail_in_production"


async def record_row(conn: DbConnection, record_id: UUID) -> dict[str, Any]:
    """Every column of one record, as the admin API shows it."""
    row = await conn.fetchrow("SELECT * FROM bridge_record WHERE record_id = $1", record_id)
    if row is None:
        raise UnknownRecord(f"no bridge record {record_id}")
    return dict(row)


async def list_records(
    conn: DbConnection,
    *,
    invoice_id: str | None = None,
    status: str | None = None,
    map_name: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT * FROM bridge_record WHERE ($1::text IS NULL OR invoice_id = $1) "
        "AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR map_name = $3) "
        "ORDER BY seq LIMIT $4",
        invoice_id,
        status,
        map_name,
        limit,
    )
    return [dict(r) for r in rows]


async def stats(conn: DbConnection) -> dict[str, dict[str, int]]:
    """Per map: forwarded, filtered, one-way violations, records by status, and the source
    transactions past Microsoft's limits: failed by them (`platform_limits=microsoft`) or
    synced and counted as ones that would fail in production (`none`).

    `filtered` (and the `filtered` status with it) is the count of filtered source rows
    (`filtered_repository`): a row filtered at intake leaves no record, and a stored record
    that became filtered later is counted there too."""
    result: dict[str, dict[str, int]] = {}
    for m in await list_maps(conn):
        result[m.name] = {
            "forwarded": 0,
            "filtered": 0,
            "one_way_violations": 0,
            **{s.value: 0 for s in SyncStatus},
            TRANSACTIONS_FAILED: 0,
            TRANSACTIONS_WOULD_FAIL: 0,
        }
    for row in await conn.fetch(
        "SELECT map_name, status, count(*) AS n, count(*) FILTER (WHERE attempts > 0) AS sent "
        "FROM bridge_record GROUP BY map_name, status"
    ):
        figures = result[row["map_name"]]
        figures[row["status"]] += row["n"]
        figures["forwarded"] += row["sent"]
    for row in await conn.fetch(
        "SELECT map_name, outcome, count(*) AS n FROM bridge_source_transaction "
        "WHERE outcome <> 'within' GROUP BY map_name, outcome"
    ):
        key = TRANSACTIONS_FAILED if row["outcome"] == "fails" else TRANSACTIONS_WOULD_FAIL
        result[row["map_name"]][key] = row["n"]
    filtered = await filtered_repo.totals(conn)
    for name, figures in result.items():
        figures[SyncStatus.FILTERED.value] = filtered.get(name, 0)
        figures["one_way_violations"] = await conn.fetchval(
            "SELECT count(*) FROM bridge_activity WHERE map_name = $1 "
            "AND kind = 'one_way_violation'",
            name,
        )
    return result


async def over_limit_transactions(conn: DbConnection) -> list[dict[str, Any]]:
    """Source transactions past Microsoft's limits, one row per map, oldest first."""
    rows = await conn.fetch(
        "SELECT transaction_id, map_name, records, legal_entities, first_arrival, invoice_id, "
        "outcome, breach FROM bridge_source_transaction WHERE outcome <> 'within' "
        "ORDER BY first_arrival, transaction_id, map_name"
    )
    return [dict(r) for r in rows]


async def list_errors(
    conn: DbConnection,
    *,
    map_name: str | None = None,
    catch_up: bool | None = None,
    status: str | None = None,
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT e.*, r.record_key, r.invoice_id, r.status AS record_status "
        "FROM bridge_error e LEFT JOIN bridge_record r USING (record_id) "
        "WHERE ($1::text IS NULL OR e.map_name = $1) AND ($2::boolean IS NULL OR e.catch_up = $2) "
        "AND ($3::text IS NULL OR e.status = $3) ORDER BY e.id",
        map_name,
        catch_up,
        status,
    )
    return [dict(r) for r in rows]


async def list_alert_rules(conn: DbConnection) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch("SELECT * FROM bridge_alert_rule ORDER BY id")]


async def alert_rule_view(conn: DbConnection, rule_id: int) -> dict[str, Any]:
    """One rule as the API shows it; NotFound when unknown."""
    row = await conn.fetchrow("SELECT * FROM bridge_alert_rule WHERE id = $1", rule_id)
    if row is None:
        raise NotFound(f"no alert rule {rule_id}")
    return dict(row)


async def list_activity(
    conn: DbConnection, *, map_name: str | None = None, kind: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Newest first."""
    rows = await conn.fetch(
        "SELECT * FROM bridge_activity WHERE ($1::text IS NULL OR map_name = $1) "
        "AND ($2::text IS NULL OR kind = $2) ORDER BY id DESC LIMIT $3",
        map_name,
        kind,
        limit,
    )
    return [dict(r) for r in rows]
