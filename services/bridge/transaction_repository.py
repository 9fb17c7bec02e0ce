"""SQL of the bridge's source transactions, which Microsoft's live-sync limits are about.

Runs on the caller's connection and transaction, after the map's row lock (repository.py's lock
order). One row per source transaction and map: the records of one transaction can reach two
maps (an invoice's header and its billed lines), each under its own map lock, so each map
writes only its own row and reads the others'.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from services.bridge.domain import LimitOutcome
from services.common.db import DbConnection


@dataclass(frozen=True)
class TransactionSeen:
    """A source transaction as one map has it, with what every map has seen of it.

    `first_arrival` is the earliest of its maps' first arrivals; `breach` the reason a map
    found it past a limit, if any did (a transaction fails whole, whichever map saw it first);
    `outcome` this map's.
    """

    first_arrival: datetime
    outcome: LimitOutcome
    breach: str | None


async def note_transaction(
    conn: DbConnection,
    transaction_id: UUID,
    map_name: str,
    *,
    records: int,
    legal_entities: int,
    now: datetime,
    invoice_id: str | None,
) -> TransactionSeen:
    """Record that the transaction brought records to `map_name` (the first time: `now` is its
    first arrival there); what is known of it so far.

    Another map's row written by a transaction not yet committed is not seen: at worst the two
    maps measure two minutes from their own first record, a few milliseconds apart.
    """
    await conn.execute(
        "INSERT INTO bridge_source_transaction (transaction_id, map_name, records, "
        "legal_entities, first_arrival, invoice_id) VALUES ($1, $2, $3, $4, $5, $6) "
        "ON CONFLICT (transaction_id, map_name) DO NOTHING",
        transaction_id,
        map_name,
        records,
        legal_entities,
        now,
        invoice_id,
    )
    row = await conn.fetchrow(
        "SELECT min(first_arrival) AS first_arrival, "
        "max(outcome) FILTER (WHERE map_name = $2) AS outcome, "
        "min(breach) AS breach FROM bridge_source_transaction WHERE transaction_id = $1",
        transaction_id,
        map_name,
    )
    assert row is not None  # the row inserted above, or the one before it
    return TransactionSeen(row["first_arrival"], LimitOutcome(row["outcome"]), row["breach"])


async def mark_over_limits(
    conn: DbConnection,
    transaction_id: UUID,
    map_name: str,
    outcome: LimitOutcome,
    breach: str,
) -> None:
    """The transaction is past a limit on `map_name`: what the bridge does, and why."""
    await conn.execute(
        "UPDATE bridge_source_transaction SET outcome = $3, breach = $4 "
        "WHERE transaction_id = $1 AND map_name = $2",
        transaction_id,
        map_name,
        outcome.value,
        breach,
    )


async def all_known(conn: DbConnection, record_ids: list[UUID]) -> bool:
    """Whether every one of these records is stored already: the event that maps them was
    seen before (a redelivery), so its arrival says nothing of its transaction's duration."""
    known: int = await conn.fetchval(
        "SELECT count(*) FROM bridge_record WHERE record_id = ANY($1::uuid[])", record_ids
    )
    return known == len(record_ids)
