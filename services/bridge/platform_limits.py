"""Microsoft's limits on the bridge's intake (docs/bridge.md, "Microsoft's limits").

Dual-write syncs a source transaction whole: past the limits (`domain.TransactionLimits`:
records, legal entities, duration) it fails whole when `DWSIM_PLATFORM_LIMITS=microsoft`; with
the default, `none`, it syncs and is counted as one that would fail in production. The rules
are pure (`domain.transaction_breach`, `domain.limit_outcome`); this module keeps what the
bridge has seen of each transaction (`transaction_repository`) and says which events fail.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID

from services.bridge import repository as repo
from services.bridge import transaction_repository as tx_repo
from services.bridge.domain import (
    LimitOutcome,
    PlatformLimits,
    SourceTransaction,
    SyncStatus,
    limit_outcome,
    transaction_breach,
)
from services.bridge.records import BridgeRecord
from services.common.db import DbConnection
from services.common.logging import get_logger

log = get_logger(__name__)


def transaction_of(
    event_id: UUID, source: dict[str, Any], candidates: list[BridgeRecord], now: datetime
) -> SourceTransaction:
    """The source transaction an event is part of, as its `transaction` field says (first
    arrival: `now`, until the bridge knows better). A producer that does not say makes the
    message a transaction of its own: its records those mapped from it, its legal entities
    theirs."""
    named = source.get("transaction")
    if isinstance(named, dict):
        return SourceTransaction(
            UUID(str(named["transaction_id"])),
            int(named["records"]),
            int(named["legal_entities"]),
            now,
        )
    entities = {str((r.source_record or {}).get("legal_entity")) for r in candidates}
    return SourceTransaction(event_id, len(candidates), len(entities), now)


def _invoice_of(records: list[BridgeRecord]) -> str | None:
    """The one invoice these records belong to, if there is one."""
    invoice_ids = {r.invoice_id for r in records if r.invoice_id}
    return invoice_ids.pop() if len(invoice_ids) == 1 else None


async def failing_events(
    conn: DbConnection,
    map_name: str,
    batch: list[tuple[UUID, dict[str, Any], list[BridgeRecord]]],
    platform_limits: PlatformLimits,
    now: datetime,
) -> dict[UUID, str]:
    """The events of a batch (id, source, records) whose mapped records Microsoft's limits
    fail, with the reason: their source transaction is past the limits and the limits apply.

    Past them with `platform_limits=none`, nothing fails: the transaction is counted as one
    that would fail in production, once per map, with a line in the activity log. A
    transaction wholly in one message and within the limits leaves no trace (the common
    case: an approval). A redelivered event never gets here (the inbox drops it), so a
    late redelivery is not taken for a late record. Two statements per batch, whatever
    its size.
    """
    watched: list[tuple[UUID, SourceTransaction, list[BridgeRecord]]] = []
    for event_id, source, records in batch:
        candidates = [r for r in records if r.status is not SyncStatus.FILTERED]
        if not candidates:
            continue
        transaction = transaction_of(event_id, source, candidates, now)
        if transaction.records <= len(candidates) and not transaction_breach(transaction, now):
            continue
        watched.append((event_id, transaction, candidates))
    if not watched:
        return {}
    seen = await tx_repo.note_transactions(
        conn,
        map_name,
        {t.transaction_id: (t, _invoice_of(c)) for _, t, c in watched},
        now,
    )
    failing: dict[UUID, str] = {}
    for event_id, transaction, candidates in watched:
        known_so_far = seen[transaction.transaction_id]
        breach = known_so_far.breach or transaction_breach(
            replace(transaction, first_arrival=known_so_far.first_arrival), now
        )
        outcome = limit_outcome(breach, platform_limits)
        if breach is None or outcome is LimitOutcome.WITHIN:
            continue
        if known_so_far.outcome is LimitOutcome.WITHIN:  # the first past the limit here
            await _log_over_limits(
                conn, map_name, transaction, _invoice_of(candidates), outcome, breach
            )
            seen[transaction.transaction_id] = replace(known_so_far, outcome=outcome, breach=breach)
        if outcome is LimitOutcome.FAILS:
            failing[event_id] = (
                f"{breach}; source transaction {transaction.transaction_id} fails whole"
            )
    return failing


async def _log_over_limits(
    conn: DbConnection,
    map_name: str,
    transaction: SourceTransaction,
    invoice_id: str | None,
    outcome: LimitOutcome,
    breach: str,
) -> None:
    """Keep what the bridge does with a transaction past the limits, and say so."""
    await tx_repo.mark_over_limits(conn, transaction.transaction_id, map_name, outcome, breach)
    verdict = (
        "fails (platform limits applied)"
        if outcome is LimitOutcome.FAILS
        else "would fail in production; synced (platform limits not applied)"
    )
    await repo.add_activity(
        conn,
        map_name,
        "platform_limit",
        f"source transaction {transaction.transaction_id} {verdict}: {breach}",
        invoice_id=invoice_id,
        detail={
            "transaction_id": str(transaction.transaction_id),
            "records": transaction.records,
            "legal_entities": transaction.legal_entities,
            "outcome": outcome.value,
        },
    )
    log.warning(
        "platform_limit",
        map=map_name,
        invoice_id=invoice_id,
        transaction_id=str(transaction.transaction_id),
        outcome=outcome.value,
        reason=breach,
    )
