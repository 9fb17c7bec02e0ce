"""Reconciliation: what Dataverse and Finance each hold, and the cause of every difference.

Microsoft ships an "out of sync actuals" page; dwsim compares the two sides' own records by id,
field by field, and explains each difference from the three sides' own records: the bridge's
per-record sync status (pending, failed with reason, queued behind a paused map, not synced
because the map is stopped) and Finance's waiting and import reasons.

What is compared (each counted in the report, so that "agree" says what it rests on):
- every billed-sales actual ↔ its proposal line, by actual id: quantity, amount, currency,
  billing type; and no proposal line without a billed actual of its invoice;
- each confirmed invoice's net and tax (Dataverse) ↔ the sum of its chargeable proposal lines
  and the proposal's tax (Finance) — never Finance's copy of the header total;
- each posted customer invoice ↔ its proposal: number, currency, net, tax, total;
- each actual's accounting detail in Dataverse (voucher, voucher date, accounting amount) ↔ the
  stamp Finance wrote on its staged row when it posted it, and that stamp's voucher ↔ the
  posted document (the customer invoice, or the integration journal line);
- every cost and unbilled-sales actual that should sync ↔ its staged row (quantity, amount,
  currency, transaction and billing type) and, once journaled, its journal line;
- every skip-sync actual ↔ absent from staging; every staged row ↔ a Dataverse actual.

The comparison is pure; `fetch_snapshot` in `snapshot.py` reads the services' APIs. It is exact
on a settled stack; on one under load, records in flight show as explained differences.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

BILLED_SALES = "billed_sales"
JOURNALED_TYPES = ("cost", "unbilled_sales")
CHARGEABLE = "chargeable"


@dataclass(frozen=True)
class Actual:
    """An `msdyn_actual` in Dataverse: the fields Finance must agree with."""

    actual_id: str
    transaction_type: str
    billing_type: str
    quantity: Decimal
    amount: Decimal
    currency: str
    invoice_id: str | None = None
    skip_sync: bool = False
    voucher: str | None = None
    voucher_date: date | None = None
    accounting_currency_amount: Decimal | None = None


@dataclass(frozen=True)
class ConfirmedInvoice:
    """A confirmed proforma invoice in Dataverse: its header as Dataverse totals it."""

    invoice_id: str
    legal_entity: str
    currency: str
    net_amount: Decimal
    tax_amount: Decimal
    expected_billed_lines: int


@dataclass(frozen=True)
class ProposalLine:
    """A line of a project invoice proposal in Finance: one staged billed-sales actual."""

    actual_id: str
    quantity: Decimal
    amount: Decimal
    currency: str
    billing_type: str


@dataclass(frozen=True)
class Proposal:
    """A project invoice proposal in Finance, with its lines."""

    proposal_id: str
    currency: str
    tax_amount: Decimal
    status: str
    lines: tuple[ProposalLine, ...] = ()
    waiting_reason: str | None = None
    invoice_number: str | None = None

    @property
    def net_amount(self) -> Decimal:
        """Finance's own net: the sum of its chargeable lines (domain rule 4)."""
        return sum(
            (line.amount for line in self.lines if line.billing_type == CHARGEABLE), Decimal(0)
        )


@dataclass(frozen=True)
class CustomerInvoice:
    """A customer invoice Finance posted from a proposal."""

    invoice_number: str
    proposal_id: str
    currency: str
    net_amount: Decimal
    tax_amount: Decimal
    total_amount: Decimal
    voucher: str


@dataclass(frozen=True)
class StagingRow:
    """A row of Finance's actuals staging table, with the accounting stamp of its posting."""

    actual_id: str
    transaction_type: str
    billing_type: str | None
    quantity: Decimal
    amount: Decimal
    currency: str
    invoice_id: str | None = None
    imported: bool = False
    reason: str | None = None
    journal_id: str | None = None
    voucher: str | None = None
    voucher_date: date | None = None
    accounting_currency_amount: Decimal | None = None


@dataclass(frozen=True)
class JournalLine:
    """An integration journal line: one staged cost or unbilled-sales actual."""

    journal_id: str
    actual_id: str
    quantity: Decimal
    amount: Decimal
    currency: str
    voucher: str | None = None


@dataclass(frozen=True)
class BridgeRecord:
    """The bridge's sync status of one mapped record."""

    record_key: str
    invoice_id: str | None
    map_name: str
    status: str
    reason: str | None = None
    attempts: int = 1
    target_topic: str = ""


@dataclass(frozen=True)
class FilteredRows:
    """Source rows of one invoice a bridge map's filter left out, for one reason: the bridge
    counts them and keeps no record of them (as Microsoft's dual-write keeps no row)."""

    map_name: str
    leg_name: str
    invoice_id: str | None
    reason: str
    source_rows: int


@dataclass(frozen=True)
class OverLimitTransaction:
    """A source transaction past Microsoft's live-sync limits, as the bridge counted it:
    `fails` (the limits applied: its records are in the error queue) or `would_fail` (synced;
    it would fail in production)."""

    transaction_id: str
    invoice_id: str | None
    records: int
    outcome: str
    breach: str


@dataclass(frozen=True)
class Snapshot:
    """What the three sides hold, normalised for comparison."""

    invoices: tuple[ConfirmedInvoice, ...]
    proposals: tuple[Proposal, ...]
    actuals: tuple[Actual, ...] = ()
    staging_rows: tuple[StagingRow, ...] = ()
    journal_lines: tuple[JournalLine, ...] = ()
    customer_invoices: tuple[CustomerInvoice, ...] = ()
    bridge_records: tuple[BridgeRecord, ...] = ()
    paused_maps: tuple[str, ...] = ()
    over_limit_transactions: tuple[OverLimitTransaction, ...] = ()
    filtered: tuple[FilteredRows, ...] = ()


@dataclass(frozen=True)
class Difference:
    """One difference between the sides, with its cause when it is known.

    `invoice_id` names the invoice it concerns (None for an actual outside any invoice);
    `actual_id` names the actual when the difference is one actual's.
    """

    invoice_id: str | None
    kind: str
    cause: str
    explained: bool
    actual_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """As a JSON object."""
        return asdict(self)


@dataclass(frozen=True)
class Comparison:
    """One kind of comparison the report rests on: how many records, compared by what."""

    what: str
    count: int
    by: str

    def sentence(self) -> str:
        """E.g. "3,412 billed lines compared by id, quantity and amount"."""
        return f"{self.count:,} {self.what} {self.by}"


@dataclass
class Report:
    """The reconciliation's result."""

    invoices: int
    proposals: int
    differences: list[Difference] = field(default_factory=list)
    compared: list[Comparison] = field(default_factory=list)
    # The confirmed invoices compared, in the order compared (one JUnit test case each).
    invoice_ids: list[str] = field(default_factory=list)
    # Source transactions past Microsoft's live-sync limits (not differences: with the
    # limits applied their records are in the error queue and show as differences there).
    over_limits: list[OverLimitTransaction] = field(default_factory=list)

    @property
    def would_fail(self) -> list[OverLimitTransaction]:
        """Transactions synced here that Microsoft's dual-write would have refused."""
        return [t for t in self.over_limits if t.outcome == "would_fail"]

    @property
    def failed_by_limits(self) -> list[OverLimitTransaction]:
        """Transactions the bridge failed because Microsoft's limits were applied."""
        return [t for t in self.over_limits if t.outcome == "fails"]

    def limits_sentence(self) -> str | None:
        """E.g. "1 transaction would fail in production: transaction of 1,501 records >
        1,000 records per dual-write transaction"; None when none is past the limits."""
        parts = []
        for what, these in (
            ("would fail in production", self.would_fail),
            ("failed by Microsoft's limits", self.failed_by_limits),
        ):
            if these:
                noun = "transaction" if len(these) == 1 else "transactions"
                reasons = "; ".join(
                    sorted({t.breach.removeprefix("platform limit: ") for t in these})
                )
                parts.append(f"{len(these):,} {noun} {what}: {reasons}")
        return ". ".join(parts) or None

    @property
    def agree(self) -> bool:
        """True when no comparison found a difference."""
        return not self.differences

    @property
    def unexplained(self) -> list[Difference]:
        """Differences whose cause dwsim could not find."""
        return [d for d in self.differences if not d.explained]

    def count(self, what: str) -> int:
        """How many records a comparison covered (0 when it did not run)."""
        return sum(c.count for c in self.compared if c.what == what)

    def summary(self) -> str:
        """What was compared, as one sentence."""
        return "; ".join(c.sentence() for c in self.compared) + "."

    def to_json(self) -> dict[str, Any]:
        """As a JSON object."""
        return {
            "agree": self.agree,
            "confirmed_invoices": self.invoices,
            "proposals": self.proposals,
            "compared": [asdict(c) for c in self.compared],
            "summary": self.summary(),
            "differences": [d.to_json() for d in self.differences],
            "unexplained": len(self.unexplained),
            "transactions_would_fail_in_production": [asdict(t) for t in self.would_fail],
            "transactions_failed_platform_limits": [asdict(t) for t in self.failed_by_limits],
        }


PROPOSAL_MAP_HINT = "invoice"
STAGING_TOPIC_HINT = "staging"
ACCOUNTING_TOPIC_HINT = "accounting"

# The comparisons, by name; the report counts each.
INVOICES = "confirmed invoices"
BILLED_LINES = "billed lines"
TOTALS = "invoice totals"
POSTED = "posted customer invoices"
ACCOUNTING = "actuals' accounting details"
STAGED = "cost and unbilled-sales actuals"
JOURNALED = "journaled actuals"
SKIP_SYNC = "skip-sync actuals"
# The actuals map's filter's reason (services/bridge/table_maps.py) as the bridge counts it.
SKIP_SYNC_REASON = "skip sync"
STAGING = "staged rows"


def _bridge_cause(
    records: list[BridgeRecord], what: str, filtered: list[FilteredRows] | None = None
) -> tuple[str, bool]:
    """Why a record has not arrived, from the bridge's view of it. A row filtered on arrival
    leaves no record: `filtered` (its invoice's counted rows) then explains it."""
    if not records and filtered:
        counted = "; ".join(
            f"{f.source_rows} source row(s) filtered by map '{f.map_name}' — {f.reason}"
            for f in filtered
        )
        return f"{what}: no bridge record; of its invoice the bridge counted {counted}", True
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


def _import_cause(row: StagingRow) -> tuple[str, bool]:
    """Why a staged row is not imported: Finance's reason, or that no import has run on it yet
    (Finance records a reason whenever an import leaves a valid row out)."""
    if row.reason:
        return f"staged row not imported: {row.reason}", True
    return "staged row not imported: no import from staging has run on it yet", True


def _field_differences(
    fields: Iterable[tuple[str, object, object]], theirs: str, ours: str = "Dataverse"
) -> list[str]:
    """ "quantity Dataverse 8, Finance line 6" for each field whose two values differ."""
    return [f"{name} {ours} {a}, {theirs} {b}" for name, a, b in fields if a != b]


class _Reconciliation:
    """One pass over a snapshot: indexes by id, then each comparison in turn."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.report = Report(len(snapshot.invoices), len(snapshot.proposals))
        self.counts: dict[str, int] = defaultdict(int)
        self.proposals = {p.proposal_id: p for p in snapshot.proposals}
        self.actuals = {a.actual_id: a for a in snapshot.actuals}
        self.staging = {r.actual_id: r for r in snapshot.staging_rows}
        self.journal_lines = {line.actual_id: line for line in snapshot.journal_lines}
        self.customer_invoices = {c.proposal_id: c for c in snapshot.customer_invoices}
        self.billed: dict[str, list[Actual]] = defaultdict(list)
        for actual in snapshot.actuals:
            if actual.transaction_type == BILLED_SALES and actual.invoice_id:
                self.billed[actual.invoice_id].append(actual)
        self.records: dict[str, list[BridgeRecord]] = defaultdict(list)
        for record in snapshot.bridge_records:
            if record.invoice_id:
                self.records[record.invoice_id].append(record)
            self.records[record.record_key].append(record)
        self.filtered: dict[str, list[FilteredRows]] = defaultdict(list)
        for rows in snapshot.filtered:
            if rows.invoice_id:
                self.filtered[rows.invoice_id].append(rows)
        self.unimported: dict[str, list[StagingRow]] = defaultdict(list)
        for row in snapshot.staging_rows:
            if not row.imported and row.invoice_id:
                self.unimported[row.invoice_id].append(row)

    def add(self, difference: Difference) -> None:
        self.report.differences.append(difference)

    def records_of(self, key: str, topic_hint: str) -> list[BridgeRecord]:
        """The bridge's records of a key on one leg (all of them when the leg is not known)."""
        return [
            r
            for r in self.records.get(key, [])
            if not r.target_topic or topic_hint in r.target_topic
        ]

    def run(self) -> Report:
        for invoice in self.snapshot.invoices:
            self.counts[INVOICES] += 1
            self.report.invoice_ids.append(invoice.invoice_id)
            self.invoice(invoice)
        self.synced_actuals()
        self.orphans()
        # A transaction reaching two maps is one transaction: counted once.
        by_id = {t.transaction_id: t for t in self.snapshot.over_limit_transactions}
        self.report.over_limits = list(by_id.values())
        skip_sync_counted = sum(
            f.source_rows for f in self.snapshot.filtered if f.reason == SKIP_SYNC_REASON
        )
        self.report.compared = [
            Comparison(
                INVOICES, self.counts[INVOICES], "compared with their proposals by id and currency"
            ),
            Comparison(
                BILLED_LINES,
                self.counts[BILLED_LINES],
                "compared with their proposal lines by actual id, quantity, amount, currency "
                "and billing type",
            ),
            Comparison(
                TOTALS,
                self.counts[TOTALS],
                "compared by net (Dataverse) with the sum of chargeable proposal lines and by "
                "tax with the proposal's tax",
            ),
            Comparison(
                POSTED,
                self.counts[POSTED],
                "compared with their proposals by number, currency, net, tax and total",
            ),
            Comparison(
                ACCOUNTING,
                self.counts[ACCOUNTING],
                "compared by voucher, voucher date and accounting amount with Finance's posting "
                "of the same actual",
            ),
            Comparison(
                STAGED,
                self.counts[STAGED],
                "compared with their staged rows by id, type, billing type, quantity, amount "
                "and currency",
            ),
            Comparison(
                JOURNALED,
                self.counts[JOURNALED],
                "compared with their integration journal lines by id, quantity, amount and "
                "currency",
            ),
            Comparison(
                SKIP_SYNC,
                self.counts[SKIP_SYNC],
                # A row an initial sync carried again is counted again: no verdict on it.
                f"checked absent from staging (the bridge counted {skip_sync_counted} rows "
                "filtered by skip sync)",
            ),
            Comparison(STAGING, self.counts[STAGING], "checked to have a Dataverse actual"),
        ]
        return self.report

    # --- invoices and proposals ------------------------------------------------------------------

    def invoice(self, invoice: ConfirmedInvoice) -> None:
        iid = invoice.invoice_id
        proposal = self.proposals.get(iid)
        if proposal is None:
            header_records = [
                r for r in self.records.get(iid, []) if PROPOSAL_MAP_HINT in r.map_name.lower()
            ]
            cause, known = _bridge_cause(header_records, "proposal header")
            self.add(Difference(iid, "confirmed invoice has no proposal", cause, known))
            return
        if proposal.currency != invoice.currency:
            self.add(
                Difference(
                    iid,
                    "currency differs",
                    f"Dataverse {invoice.currency}, Finance {proposal.currency}",
                    False,
                )
            )
        if not proposal.lines:
            rows = self.unimported.get(iid, [])
            if proposal.waiting_reason:
                cause, known = f"waiting: {proposal.waiting_reason}", True
            elif rows:
                cause, known = f"staged rows not imported: {rows[0].reason}", bool(rows[0].reason)
            else:
                cause, known = "no lines and no waiting reason", False
            self.add(Difference(iid, "proposal has no lines", cause, known))
            return
        self.billed_lines(invoice, proposal)
        self.totals(invoice, proposal)
        if len(proposal.lines) != invoice.expected_billed_lines:
            self.add(
                Difference(
                    iid,
                    "line count differs",
                    f"Dataverse confirmed {invoice.expected_billed_lines} billed lines, "
                    f"the proposal has {len(proposal.lines)}",
                    False,
                )
            )
        if proposal.status != "posted":
            self.add(
                Difference(
                    iid,
                    "proposal not posted",
                    f"proposal is {proposal.status}: the receivables clerk has not posted it yet",
                    True,
                )
            )
            return
        self.posted(invoice, proposal)

    def billed_lines(self, invoice: ConfirmedInvoice, proposal: Proposal) -> None:
        """Every billed actual of the invoice ↔ its proposal line, by actual id."""
        iid = invoice.invoice_id
        lines = {line.actual_id: line for line in proposal.lines}
        billed = self.billed.get(iid, [])
        for actual in billed:
            line = lines.get(actual.actual_id)
            if line is None:
                cause, known = self.why_no_line(actual, iid)
                self.add(
                    Difference(
                        iid, "billed actual has no proposal line", cause, known, actual.actual_id
                    )
                )
                continue
            self.counts[BILLED_LINES] += 1
            fields = _field_differences(
                (
                    ("quantity", actual.quantity, line.quantity),
                    ("amount", actual.amount, line.amount),
                    ("currency", actual.currency, line.currency),
                    ("billing type", actual.billing_type, line.billing_type),
                ),
                "Finance line",
            )
            if fields:
                self.add(
                    Difference(
                        iid,
                        "proposal line differs from its billed actual",
                        f"billed actual {actual.actual_id}: " + "; ".join(fields),
                        False,
                        actual.actual_id,
                    )
                )
        own = {a.actual_id for a in billed}
        for line in proposal.lines:
            if line.actual_id in own:
                continue
            other = self.actuals.get(line.actual_id)
            cause = (
                "no Dataverse actual has this id"
                if other is None
                else f"the actual is a {other.transaction_type} actual of invoice "
                f"{other.invoice_id or '(none)'}"
            )
            self.add(
                Difference(
                    iid,
                    "proposal line with no billed actual of this invoice",
                    f"line for actual {line.actual_id}: {cause}",
                    False,
                    line.actual_id,
                )
            )

    def why_no_line(self, actual: Actual, invoice_id: str) -> tuple[str, bool]:
        row = self.staging.get(actual.actual_id)
        if row is None:
            return _bridge_cause(
                self.records_of(actual.actual_id, STAGING_TOPIC_HINT), "billed actual not staged"
            )
        if not row.imported:
            return _import_cause(row)
        return (
            f"staged row imported, but not as a line of proposal {invoice_id} "
            f"(journal {row.journal_id or '—'})",
            False,
        )

    def totals(self, invoice: ConfirmedInvoice, proposal: Proposal) -> None:
        """Dataverse's net and tax ↔ Finance's own lines and tax."""
        iid = invoice.invoice_id
        self.counts[TOTALS] += 1
        if invoice.net_amount != proposal.net_amount:
            self.add(
                Difference(
                    iid,
                    "net amount differs",
                    f"Dataverse invoice net {invoice.net_amount}, Finance's chargeable proposal "
                    f"lines {proposal.net_amount}",
                    False,
                )
            )
        if invoice.tax_amount != proposal.tax_amount:
            self.add(
                Difference(
                    iid,
                    "tax differs",
                    f"Dataverse tax {invoice.tax_amount}, "
                    f"Finance proposal tax {proposal.tax_amount}",
                    False,
                )
            )

    def posted(self, invoice: ConfirmedInvoice, proposal: Proposal) -> None:
        """The posted customer invoice ↔ its proposal; each billed actual's accounting."""
        iid = invoice.invoice_id
        posted = self.customer_invoices.get(iid)
        if posted is None:
            self.add(
                Difference(
                    iid,
                    "posted proposal has no customer invoice",
                    f"proposal is posted as {proposal.invoice_number or '(no number)'}, "
                    "Finance holds no customer invoice for it",
                    False,
                )
            )
        else:
            self.counts[POSTED] += 1
            net = proposal.net_amount
            fields = _field_differences(
                (
                    ("number", proposal.invoice_number, posted.invoice_number),
                    ("currency", proposal.currency, posted.currency),
                    ("net", net, posted.net_amount),
                    ("tax", proposal.tax_amount, posted.tax_amount),
                    ("total", net + proposal.tax_amount, posted.total_amount),
                ),
                "customer invoice",
                ours="proposal",
            )
            if fields:
                self.add(
                    Difference(
                        iid,
                        "customer invoice differs from its proposal",
                        "; ".join(fields),
                        False,
                    )
                )
        missing: list[str] = []
        for actual in self.billed.get(iid, []):
            if actual.voucher is None:
                missing.append(actual.actual_id)
                continue
            self.accounting(actual, iid, posted.voucher if posted else None)
        if missing:
            back = [r for a in missing for r in self.records_of(a, ACCOUNTING_TOPIC_HINT)]
            cause, known = _bridge_cause(back, f"{len(missing)} actual(s) lack accounting")
            self.add(
                Difference(
                    iid,
                    "posted invoice's actuals lack accounting detail",
                    cause,
                    known,
                    missing[0],
                )
            )

    def accounting(
        self, actual: Actual, invoice_id: str | None, document_voucher: str | None
    ) -> None:
        """One actual's stamp in Dataverse ↔ Finance's stamp of the same actual ↔ the voucher of
        the document Finance posted it with (customer invoice or journal line)."""
        row = self.staging.get(actual.actual_id)
        finance_voucher = row.voucher if row else None
        if actual.voucher is None and finance_voucher is None:
            return
        self.counts[ACCOUNTING] += 1
        if row is None or finance_voucher is None:
            self.add(
                Difference(
                    invoice_id,
                    "voucher in Dataverse that Finance never posted",
                    f"actual {actual.actual_id} carries voucher {actual.voucher}; Finance's "
                    f"staged row {'is missing' if row is None else 'has no voucher'}",
                    False,
                    actual.actual_id,
                )
            )
            return
        fields = _field_differences(
            (
                ("voucher", actual.voucher, row.voucher),
                ("voucher date", actual.voucher_date, row.voucher_date),
                (
                    "accounting amount",
                    actual.accounting_currency_amount,
                    row.accounting_currency_amount,
                ),
            ),
            "Finance",
        )
        if document_voucher is not None and finance_voucher != document_voucher:
            fields.append(
                f"Finance stamped voucher {finance_voucher} but posted the actual on "
                f"{document_voucher}"
            )
        if fields:
            self.add(
                Difference(
                    invoice_id,
                    "accounting detail differs from Finance's posting",
                    f"actual {actual.actual_id}: " + "; ".join(fields),
                    False,
                    actual.actual_id,
                )
            )

    # --- cost and unbilled sales -----------------------------------------------------------------

    def synced_actuals(self) -> None:
        """Cost and unbilled-sales actuals ↔ staging ↔ journal; skip-sync ones ↔ absent."""
        missing_back: dict[str, list[str]] = defaultdict(list)
        for actual in self.snapshot.actuals:
            if actual.skip_sync:
                self.counts[SKIP_SYNC] += 1
                if actual.actual_id in self.staging:
                    self.add(
                        Difference(
                            actual.invoice_id,
                            "skip-sync actual reached staging",
                            f"{actual.transaction_type} actual {actual.actual_id} is flagged "
                            "skip sync, yet Finance staged it",
                            False,
                            actual.actual_id,
                        )
                    )
                continue
            if actual.transaction_type not in JOURNALED_TYPES:
                continue
            row = self.staging.get(actual.actual_id)
            if row is None:
                cause, known = _bridge_cause(
                    self.records_of(actual.actual_id, STAGING_TOPIC_HINT),
                    f"{actual.transaction_type} actual {actual.actual_id}",
                    self.filtered.get(actual.invoice_id or "", []),
                )
                self.add(
                    Difference(
                        actual.invoice_id,
                        "actual never reached staging",
                        cause,
                        known,
                        actual.actual_id,
                    )
                )
                continue
            self.counts[STAGED] += 1
            fields = _field_differences(
                (
                    ("transaction type", actual.transaction_type, row.transaction_type),
                    ("billing type", actual.billing_type, row.billing_type),
                    ("quantity", actual.quantity, row.quantity),
                    ("amount", actual.amount, row.amount),
                    ("currency", actual.currency, row.currency),
                ),
                "Finance staging",
            )
            if fields:
                self.add(
                    Difference(
                        actual.invoice_id,
                        "staged row differs from its actual",
                        f"{actual.transaction_type} actual {actual.actual_id}: "
                        + "; ".join(fields),
                        False,
                        actual.actual_id,
                    )
                )
            if not row.imported:
                cause, known = _import_cause(row)
                self.add(
                    Difference(
                        actual.invoice_id,
                        "staged row not imported",
                        f"{row.transaction_type} {actual.actual_id}: {cause}",
                        known,
                        actual.actual_id,
                    )
                )
                continue
            line = self.journal_lines.get(actual.actual_id)
            if line is None:
                self.add(
                    Difference(
                        actual.invoice_id,
                        "imported row has no journal line",
                        f"{actual.transaction_type} actual {actual.actual_id} is marked imported "
                        f"(journal {row.journal_id or '—'}) but no journal line holds it",
                        False,
                        actual.actual_id,
                    )
                )
                continue
            self.counts[JOURNALED] += 1
            fields = _field_differences(
                (
                    ("quantity", actual.quantity, line.quantity),
                    ("amount", actual.amount, line.amount),
                    ("currency", actual.currency, line.currency),
                ),
                f"journal {line.journal_id}",
            )
            if fields:
                self.add(
                    Difference(
                        actual.invoice_id,
                        "journal line differs from its actual",
                        f"{actual.transaction_type} actual {actual.actual_id}: "
                        + "; ".join(fields),
                        False,
                        actual.actual_id,
                    )
                )
            if actual.voucher is None and row.voucher is not None:
                missing_back[line.journal_id].append(actual.actual_id)
            else:
                self.accounting(actual, actual.invoice_id, line.voucher)
        for journal_id, missing in sorted(missing_back.items()):
            back = [r for a in missing for r in self.records_of(a, ACCOUNTING_TOPIC_HINT)]
            cause, known = _bridge_cause(
                back, f"{len(missing)} actual(s) of journal {journal_id} lack accounting"
            )
            self.add(
                Difference(
                    None, "journal-posted actuals lack accounting detail", cause, known, missing[0]
                )
            )

    def orphans(self) -> None:
        """Proposals and staged rows that no Dataverse record accounts for."""
        confirmed = {i.invoice_id for i in self.snapshot.invoices}
        for proposal in self.snapshot.proposals:
            if proposal.proposal_id not in confirmed:
                self.add(
                    Difference(
                        proposal.proposal_id,
                        "proposal with no Dataverse origin",
                        "no confirmed Dataverse invoice has this id",
                        False,
                    )
                )
        for row in self.snapshot.staging_rows:
            self.counts[STAGING] += 1
            if row.actual_id not in self.actuals:
                self.add(
                    Difference(
                        row.invoice_id,
                        "staged row with no Dataverse actual",
                        f"{row.transaction_type} row {row.actual_id}: Dataverse has no such actual",
                        False,
                        row.actual_id,
                    )
                )


def scoped(snapshot: Snapshot, invoice_ids: Iterable[str], actual_ids: Iterable[str]) -> Snapshot:
    """The part of a snapshot that concerns these invoices and actuals, and nothing else.

    Several tests share one stack: each reconciles only what it created (its invoices, and the
    actuals of its projects), so another test's records in flight never show as a difference
    here. Proposals and customer invoices are kept by invoice id (a proposal's id is its
    invoice's), staged rows and journal lines by actual id, bridge records by either key.
    """
    invoices, actuals = set(invoice_ids), set(actual_ids)
    keys = invoices | actuals
    return Snapshot(
        invoices=tuple(i for i in snapshot.invoices if i.invoice_id in invoices),
        proposals=tuple(p for p in snapshot.proposals if p.proposal_id in invoices),
        actuals=tuple(a for a in snapshot.actuals if a.actual_id in actuals),
        staging_rows=tuple(r for r in snapshot.staging_rows if r.actual_id in actuals),
        journal_lines=tuple(j for j in snapshot.journal_lines if j.actual_id in actuals),
        customer_invoices=tuple(c for c in snapshot.customer_invoices if c.proposal_id in invoices),
        bridge_records=tuple(
            r for r in snapshot.bridge_records if r.invoice_id in keys or r.record_key in keys
        ),
        paused_maps=snapshot.paused_maps,
        over_limit_transactions=tuple(
            t for t in snapshot.over_limit_transactions if t.invoice_id in invoices
        ),
        filtered=tuple(f for f in snapshot.filtered if f.invoice_id in invoices),
    )


def reconcile(snapshot: Snapshot) -> Report:
    """Compare the sides by id, field by field, and explain every difference."""
    return _Reconciliation(snapshot).run()
