"""Reconciliation: what Dataverse and Finance each hold, and the cause of every difference.

Microsoft ships an "out of sync actuals" page; dwsim explains each difference instead, from the
three sides' own records: the bridge's per-record sync status (pending, failed with reason,
queued behind a paused map, not synced because the map is stopped) and Finance's waiting reasons.
The comparison is pure; `fetch_snapshot` in `snapshot.py` reads the services' APIs.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class ConfirmedInvoice:
    """A confirmed proforma invoice in Dataverse."""

    invoice_id: str
    legal_entity: str
    currency: str
    total_amount: Decimal
    expected_billed_lines: int
    billed_actual_ids: tuple[str, ...] = ()
    actuals_without_accounting: tuple[str, ...] = ()


@dataclass(frozen=True)
class Proposal:
    """A project invoice proposal in Finance."""

    proposal_id: str
    currency: str
    total_amount: Decimal
    status: str
    line_count: int
    waiting_reason: str | None = None


@dataclass(frozen=True)
class BridgeRecord:
    """The bridge's sync status of one mapped record."""

    record_key: str
    invoice_id: str | None
    map_name: str
    status: str
    reason: str | None = None
    attempts: int = 1


@dataclass(frozen=True)
class UnimportedRow:
    """A staged row Finance has not imported, with its reason."""

    actual_id: str
    invoice_id: str | None
    transaction_type: str
    reason: str | None


@dataclass(frozen=True)
class Snapshot:
    """What the three sides hold, normalised for comparison."""

    invoices: tuple[ConfirmedInvoice, ...]
    proposals: tuple[Proposal, ...]
    bridge_records: tuple[BridgeRecord, ...] = ()
    unimported_rows: tuple[UnimportedRow, ...] = ()
    paused_maps: tuple[str, ...] = ()


@dataclass(frozen=True)
class Difference:
    """One difference between the sides, with its cause when it is known."""

    invoice_id: str
    kind: str
    cause: str
    explained: bool

    def to_json(self) -> dict[str, Any]:
        """As a JSON object."""
        return asdict(self)


@dataclass
class Report:
    """The reconciliation's result."""

    invoices: int
    proposals: int
    differences: list[Difference] = field(default_factory=list)

    @property
    def agree(self) -> bool:
        """True when the two sides hold the same invoices, lines, amounts and accounting."""
        return not self.differences

    @property
    def unexplained(self) -> list[Difference]:
        """Differences whose cause dwsim could not find."""
        return [d for d in self.differences if not d.explained]

    def to_json(self) -> dict[str, Any]:
        """As a JSON object."""
        return {
            "agree": self.agree,
            "confirmed_invoices": self.invoices,
            "proposals": self.proposals,
            "differences": [d.to_json() for d in self.differences],
            "unexplained": len(self.unexplained),
        }


PROPOSAL_MAP_HINT = "invoice"


def _bridge_cause(records: list[BridgeRecord], what: str) -> tuple[str, bool]:
    """Why a record has not arrived, from the bridge's view of it."""
    if not records:
        return f"{what}: the bridge never received it (check Dataverse's outbox)", False
    for status, text in (
        ("failed", "failed in the bridge's error queue"),
        ("queued", "queued: map '{map}' is paused"),
        ("not_synced", "not synced: map '{map}' is stopped"),
        ("pending", "pending: sent, no receipt from the target yet (attempt {attempts})"),
        ("filtered", "filtered by map '{map}'"),
    ):
        matching = [r for r in records if r.status == status]
        if matching:
            r = matching[0]
            cause = text.format(map=r.map_name, attempts=r.attempts)
            if r.reason:
                cause += f" — {r.reason}"
            return f"{what}: {cause}", True
    synced = records[0]
    return (
        f"{what}: the bridge reports it synced ({synced.map_name}) but the target lacks it",
        False,
    )


def reconcile(snapshot: Snapshot) -> Report:
    """Compare the sides and explain every difference."""
    report = Report(len(snapshot.invoices), len(snapshot.proposals))
    proposals = {p.proposal_id: p for p in snapshot.proposals}
    records: dict[str, list[BridgeRecord]] = defaultdict(list)
    for record in snapshot.bridge_records:
        if record.invoice_id:
            records[record.invoice_id].append(record)
        records[record.record_key].append(record)
    unimported: dict[str, list[UnimportedRow]] = defaultdict(list)
    for row in snapshot.unimported_rows:
        unimported[row.invoice_id or "-"].append(row)
    add = report.differences.append

    for invoice in snapshot.invoices:
        iid = invoice.invoice_id
        proposal = proposals.get(iid)
        if proposal is None:
            header_records = [
                r for r in records.get(iid, []) if PROPOSAL_MAP_HINT in r.map_name.lower()
            ]
            cause, known = _bridge_cause(header_records, "proposal header")
            add(Difference(iid, "confirmed invoice has no proposal", cause, known))
            continue
        if proposal.currency != invoice.currency:
            add(
                Difference(
                    iid,
                    "currency differs",
                    f"Dataverse {invoice.currency}, Finance {proposal.currency}",
                    False,
                )
            )
        if proposal.total_amount != invoice.total_amount:
            add(
                Difference(
                    iid,
                    "amount differs",
                    f"Dataverse {invoice.total_amount}, Finance proposal {proposal.total_amount}",
                    False,
                )
            )
        if proposal.line_count == 0:
            rows = unimported.get(iid, [])
            if proposal.waiting_reason:
                cause, known = f"waiting: {proposal.waiting_reason}", True
            elif rows:
                cause, known = f"staged rows not imported: {rows[0].reason}", bool(rows[0].reason)
            else:
                cause, known = "no lines and no waiting reason", False
            add(Difference(iid, "proposal has no lines", cause, known))
        elif proposal.line_count != invoice.expected_billed_lines:
            add(
                Difference(
                    iid,
                    "line count differs",
                    f"Dataverse confirmed {invoice.expected_billed_lines} billed lines, "
                    f"the proposal has {proposal.line_count}",
                    False,
                )
            )
        elif proposal.status != "posted":
            add(
                Difference(
                    iid,
                    "proposal not posted",
                    f"proposal is {proposal.status}: the receivables clerk has not posted it yet",
                    True,
                )
            )
        else:
            missing = invoice.actuals_without_accounting
            if missing:
                back = [r for a in missing for r in records.get(a, [])]
                cause, known = _bridge_cause(back, f"{len(missing)} actual(s) lack accounting")
                add(
                    Difference(iid, "posted invoice's actuals lack accounting detail", cause, known)
                )
        for row in unimported.get(iid, []) if proposal.line_count else []:
            add(
                Difference(
                    iid,
                    "staged row not imported",
                    f"{row.transaction_type} {row.actual_id}: {row.reason}",
                    bool(row.reason),
                )
            )

    confirmed = {i.invoice_id for i in snapshot.invoices}
    for proposal in snapshot.proposals:
        if proposal.proposal_id not in confirmed:
            add(
                Difference(
                    proposal.proposal_id,
                    "proposal with no Dataverse origin",
                    "no confirmed Dataverse invoice has this id",
                    False,
                )
            )
    return report
