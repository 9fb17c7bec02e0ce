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

from services.bridge.domain import LimitOutcome, SourceTransaction
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


async def note_transactions(
    conn: DbConnection,
    map_name: str,
    transactions: dict[UUID, tuple[SourceTransaction, str | None]],
    now: datetime,
) -> dict[UUID, TransactionSeen]:
    """Record that these transactions (each with its invoice, if any) brought records to
    `map_name` (the first time: `now` is their first arrival there); what is known of each.

    Another map's row written by a transaction not yet committed is not seen: at worst the two
    maps measure two minutes from their own first record, a few milliseconds apart.
    """
    ids = list(transactions)
    await conn.execute(
        "INSERT INTO bridge_source_transaction (transaction_id, map_name, records, "
        "legal_entities, first_arrival, invoice_id) "
        "SELECT t, $2, r, l, $3, i FROM unnest($1::uuid[], $4::int[], $5::int[], $6::text[]) "
        "AS u(t, r, l, i) ON CONFLICT (transaction_id, map_name) DO NOTHING",
        ids,
        map_name,
        now,
        [transactions[i][0].records for i in ids],
        [transactions[i][0].legal_entities for i in ids],
        [transactions[i][1] for i in ids],
    )
    rows = await conn.fetch(
        "SELECT transaction_id, min(first_arrival) AS first_arrival, "
        "max(outcome) FILTER (WHERE map_name = $2) AS outcome, min(breach) AS breach "
        "FROM bridge_source_transaction WHERE transaction_id = ANY($1::uuid[]) "
        "GROUP BY transaction_id",
        ids,
        map_name,
    )
    return {
        r["transaction_id"]: TransactionSeen(
            r["first_arrival"], LimitOutcome(r["outcome"]), r["breach"]
        )
        for r in rows
    }


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
