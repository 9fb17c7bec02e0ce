"""SQL of the filtered source rows' counts (migration 008): a source row a map's filter leaves
out is counted per map, leg, invoice and reason, not stored as a bridge record.

Writes run on the caller's connection and transaction, after the map's row lock
(repository.py's lock order): the count rows of a map are written only under its lock, so
they add no new lock order.
"""

from __future__ import annotations

from typing import Any

from services.bridge.records import FilteredCount
from services.common.db import DbConnection


async def add_counts(conn: DbConnection, counts: list[FilteredCount]) -> None:
    """Add these counts, in one statement whatever their number.

    Exactly once per source row: the caller applies the batch in the transaction that records
    its event ids in the inbox (services/common/inbox.py), so a redelivered event never gets
    here, and a batch rolled back takes its counts with it.
    """
    if not counts:
        return
    # One statement (one round trip) keeps both the counts and the per-map totals; `counts`
    # come in key order, so concurrent batches take the rows' locks in one order.
    await conn.execute(
        "WITH batch AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], "
        "$5::bigint[]) AS b(map_name, leg_name, invoice_id, reason, source_rows)), "
        "total AS (INSERT INTO bridge_filtered_total AS t (map_name, source_rows) "
        "SELECT map_name, sum(source_rows) FROM batch GROUP BY map_name ORDER BY map_name "
        "ON CONFLICT (map_name) DO UPDATE SET source_rows = t.source_rows + excluded.source_rows) "
        "INSERT INTO bridge_filtered_count AS c "
        "(map_name, leg_name, invoice_id, reason, source_rows) "
        "SELECT map_name, leg_name, invoice_id, reason, source_rows FROM batch "
        "ON CONFLICT (map_name, invoice_id, leg_name, reason) DO UPDATE "
        "SET source_rows = c.source_rows + excluded.source_rows, last_at = now()",
        [c.map_name for c in counts],
        [c.leg_name for c in counts],
        [c.invoice_id for c in counts],
        [c.reason for c in counts],
        [c.source_rows for c in counts],
    )


async def list_counts(
    conn: DbConnection,
    *,
    map_name: str | None = None,
    invoice_id: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Filtered source rows per map, leg, invoice and reason, oldest first (an invoice of
    none is None here, as elsewhere in the API)."""
    rows = await conn.fetch(
        "SELECT map_name, leg_name, NULLIF(invoice_id, '') AS invoice_id, reason, source_rows, "
        "first_at, last_at FROM bridge_filtered_count "
        "WHERE ($1::text IS NULL OR map_name = $1) AND ($2::text IS NULL OR invoice_id = $2) "
        "ORDER BY first_at, map_name, invoice_id, leg_name, reason LIMIT $3",
        map_name,
        invoice_id,
        limit,
    )
    return [dict(r) for r in rows]


async def totals(conn: DbConnection) -> dict[str, int]:
    """Filtered source rows per map, all invoices and reasons together (a row per map)."""
    rows = await conn.fetch("SELECT map_name, source_rows FROM bridge_filtered_total")
    return {r["map_name"]: r["source_rows"] for r in rows}
