"""The chaos run's independent checker: what was lost, doubled or reordered, read from the three
databases themselves.

It logs in as the read-only checker role (`infra.postgres.checker_role`: SELECT only, every
transaction read-only), reads the tables the services' migrations define with plain SQL, and
rebuilds the truth from them. It imports nothing of the services and never calls `reconcile`:
a checker that shared the code under test would share its mistakes.

What it holds the three sides to, at quiescence:

* lost — a confirmed invoice without its proposal, or whose proposal was never posted; a billed
  actual without its proposal line; a synced actual (skip sync off) without its staging row; an
  actual Finance posted whose voucher never reached Dataverse.
* duplicated — a staging row twice for one actual; a proposal line twice for one actual; an
  actual on two vouchers of one kind (two invoice postings, or two journal postings); an event id
  applied twice by an inbox.
* reordered — where the schema shows what came first: a Dataverse actual stamped before Finance
  posted its voucher; a reversal staged before the actual it reverses; a corrective proposal
  received before the proposal it corrects.
* mismatched — a proposal line whose quantity or amount differs from its billed actual, a line
  for an actual that is not a billed actual of its invoice, a staging row for an actual
  Dataverse does not hold, an unbalanced voucher, an actual stamped with another voucher than
  the one Finance posted.

Each finding names its ids. Records parked or refused somewhere a person can see them (inbox
parking, the bridge's error queue, Finance's refused records, invalid staging rows, Dataverse's
refused accounting updates) are counted apart: they are not lost, they wait for a person.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

CATEGORIES = ("lost", "duplicated", "reordered", "mismatched")
CONFIRMED = "confirmed"
BILLED_SALES = "billed_sales"
INVOICE_VOUCHER = "customer_invoice"


@dataclass(frozen=True)
class Finding:
    """One thing a person would count as wrong, with the ids that let them look at it."""

    category: str
    kind: str
    ids: dict[str, str]
    detail: str = ""


@dataclass
class CheckReport:
    """The checker's verdict: counts and findings by category, what it read, what is parked."""

    findings: list[Finding] = field(default_factory=list)
    read: dict[str, int] = field(default_factory=dict)
    parked: dict[str, int] = field(default_factory=dict)

    def add(self, category: str, kind: str, detail: str = "", **ids: object) -> None:
        """Record one finding; `ids` name the records (invoice_id=…, actual_id=…)."""
        assert category in CATEGORIES, category
        self.findings.append(Finding(category, kind, {k: str(v) for k, v in ids.items()}, detail))

    def count(self, category: str) -> int:
        """How many findings of a category."""
        return sum(1 for f in self.findings if f.category == category)

    def of(self, category: str, kind: str | None = None) -> list[Finding]:
        """The findings of a category (and kind)."""
        return [f for f in self.findings if f.category == category and kind in (None, f.kind)]

    @property
    def clean(self) -> bool:
        """Nothing lost, duplicated, reordered or mismatched."""
        return not self.findings

    @property
    def parked_total(self) -> int:
        """Records waiting for a person, over every place they are kept."""
        return sum(self.parked.values())

    def counts(self) -> dict[str, int]:
        """Findings per category."""
        return {c: self.count(c) for c in CATEGORIES}

    def summary(self) -> str:
        """One line: the counts, and what was read."""
        counts = ", ".join(f"{n} {c}" for c, n in self.counts().items())
        read = ", ".join(f"{n} {what}" for what, n in self.read.items())
        return f"{counts} (read {read})"

    def to_json(self) -> dict[str, Any]:
        """As a JSON object, every finding with its ids."""
        return {
            "counts": self.counts(),
            "read": dict(self.read),
            "parked": dict(self.parked),
            "findings": [asdict(f) for f in self.findings],
        }


@dataclass(frozen=True)
class CheckerUrls:
    """Where the three databases are, logged in as the read-only checker role."""

    dataverse: str
    finance: str
    bridge: str


async def check(urls: CheckerUrls) -> CheckReport:
    """Read the three databases and report every loss, duplicate, reordering and mismatch."""
    report = CheckReport()
    dataverse = await asyncpg.connect(urls.dataverse, timeout=30)
    finance = await asyncpg.connect(urls.finance, timeout=30)
    bridge = await asyncpg.connect(urls.bridge, timeout=30)
    try:
        # One repeatable-read snapshot per database: each side is read as of one moment.
        async with (
            dataverse.transaction(isolation="repeatable_read", readonly=True),
            finance.transaction(isolation="repeatable_read", readonly=True),
            bridge.transaction(isolation="repeatable_read", readonly=True),
        ):
            dv = await _read_dataverse(dataverse)
            fo = await _read_finance(finance)
            report.read = {
                "confirmed invoices": len(dv.invoices),
                "billed actuals": sum(len(v) for v in dv.billed.values()),
                "synced actuals": len(dv.synced),
                "staging rows": len(fo.staging),
                "proposals": len(fo.proposals),
                "vouchers": len(fo.voucher_posted_at),
            }
            _check_proposals(dv, fo, report)
            _check_staging(dv, fo, report)
            _check_vouchers(fo, report)
            _check_stamps(dv, fo, report)
            _check_order(dv, fo, report)
            for name, conn in (("dataverse", dataverse), ("finance", finance), ("bridge", bridge)):
                await _check_inbox(name, conn, report)
                report.parked.update(await _parked(name, conn))
            report.parked["bridge error queue (open)"] = int(
                await bridge.fetchval("SELECT count(*) FROM bridge_error WHERE status = 'open'")
            )
    finally:
        for conn in (dataverse, finance, bridge):
            await conn.close()
    return report


# --- what each side holds ------------------------------------------------------------------------


@dataclass
class _Dataverse:
    invoices: dict[UUID, asyncpg.Record]  # confirmed proforma invoices
    billed: dict[UUID, list[asyncpg.Record]]  # invoice -> its synced billed-sales actuals
    synced: dict[UUID, asyncpg.Record]  # every actual with skip sync off


@dataclass
class _Finance:
    proposals: dict[UUID, asyncpg.Record]
    lines: list[asyncpg.Record]
    staging: list[asyncpg.Record]
    customer_invoices: dict[UUID, list[asyncpg.Record]]  # proposal -> its customer invoices
    voucher_posted_at: dict[str, datetime]
    voucher_sums: dict[str, Decimal]
    vouchers_per_actual: dict[tuple[UUID, str], set[str]]  # (actual, source type) -> vouchers


async def _read_dataverse(conn: asyncpg.Connection) -> _Dataverse:
    invoices = {
        r["invoice_id"]: r
        for r in await conn.fetch(
            "SELECT invoice_id, invoice_number, expected_billed_lines, is_corrective, "
            "corrects_invoice_id, confirmed_at FROM proforma_invoice WHERE status = $1",
            CONFIRMED,
        )
    }
    synced = {
        r["actual_id"]: r
        for r in await conn.fetch(
            "SELECT actual_id, seq, transaction_type, invoice_id, quantity, amount, "
            "reverses_actual_id, voucher, accounting_updated_at, created_at "
            "FROM msdyn_actual WHERE NOT skip_sync"
        )
    }
    billed: dict[UUID, list[asyncpg.Record]] = defaultdict(list)
    for actual in synced.values():
        if actual["transaction_type"] == BILLED_SALES and actual["invoice_id"] in invoices:
            billed[actual["invoice_id"]].append(actual)
    return _Dataverse(invoices, billed, synced)


async def _read_finance(conn: asyncpg.Connection) -> _Finance:
    proposals = {
        r["proposal_id"]: r
        for r in await conn.fetch(
            "SELECT proposal_id, status, expected_billed_lines, is_corrective, "
            "corrected_proposal_id, received_at FROM project_invoice_proposal"
        )
    }
    lines = list(
        await conn.fetch("SELECT proposal_id, actual_id, quantity, amount FROM proposal_line")
    )
    staging = list(
        await conn.fetch(
            "SELECT actual_id, transaction_type, invoice_id, reverses_actual_id, status, "
            "voucher, received_at FROM actuals_staging"
        )
    )
    customer_invoices: dict[UUID, list[asyncpg.Record]] = defaultdict(list)
    for r in await conn.fetch("SELECT invoice_number, proposal_id, voucher FROM customer_invoice"):
        customer_invoices[r["proposal_id"]].append(r)
    voucher_posted_at: dict[str, datetime] = {}
    voucher_sums: dict[str, Decimal] = {}
    for r in await conn.fetch(
        "SELECT v.voucher, v.posted_at, coalesce(sum(e.amount), 0) AS total "
        "FROM voucher v LEFT JOIN ledger_entry e ON e.voucher = v.voucher "
        "GROUP BY v.voucher, v.posted_at"
    ):
        voucher_posted_at[r["voucher"]] = r["posted_at"]
        voucher_sums[r["voucher"]] = r["total"]
    vouchers_per_actual: dict[tuple[UUID, str], set[str]] = defaultdict(set)
    for r in await conn.fetch(
        "SELECT DISTINCT e.actual_id, v.source_type, v.voucher FROM ledger_entry e "
        "JOIN voucher v ON v.voucher = e.voucher WHERE e.actual_id IS NOT NULL"
    ):
        vouchers_per_actual[(r["actual_id"], r["source_type"])].add(r["voucher"])
    return _Finance(
        proposals,
        lines,
        staging,
        customer_invoices,
        voucher_posted_at,
        voucher_sums,
        vouchers_per_actual,
    )


# --- the checks ----------------------------------------------------------------------------------


def _check_proposals(dv: _Dataverse, fo: _Finance, report: CheckReport) -> None:
    """Every confirmed invoice: one proposal, posted, with exactly its billed lines."""
    lines_of: dict[UUID, list[asyncpg.Record]] = defaultdict(list)
    for line in fo.lines:
        lines_of[line["proposal_id"]].append(line)
    for invoice_id in dv.invoices:
        proposal = fo.proposals.get(invoice_id)
        if proposal is None:
            report.add(
                "lost",
                "proposal",
                "confirmed in Dataverse, absent in Finance",
                invoice_id=invoice_id,
            )
            continue
        if proposal["status"] != "posted":
            report.add(
                "lost",
                "proposal posting",
                f"proposal is {proposal['status']}",
                invoice_id=invoice_id,
            )
        posted = fo.customer_invoices.get(invoice_id, [])
        if len(posted) > 1:
            report.add(
                "duplicated",
                "customer invoice",
                f"{len(posted)} customer invoices",
                invoice_id=invoice_id,
                invoice_numbers=",".join(sorted(p["invoice_number"] for p in posted)),
            )
        billed = {a["actual_id"]: a for a in dv.billed.get(invoice_id, [])}
        seen = Counter(line["actual_id"] for line in lines_of.get(invoice_id, []))
        for actual_id, n in seen.items():
            if n > 1:
                report.add(
                    "duplicated",
                    "proposal line",
                    f"{n} lines for one billed actual",
                    invoice_id=invoice_id,
                    actual_id=actual_id,
                )
        for actual_id in billed.keys() - seen.keys():
            report.add(
                "lost",
                "proposal line",
                "billed actual without its proposal line",
                invoice_id=invoice_id,
                actual_id=actual_id,
            )
        for line in lines_of.get(invoice_id, []):
            actual = billed.get(line["actual_id"])
            if actual is None:
                report.add(
                    "mismatched",
                    "proposal line",
                    "line for an actual that is not a billed actual of this invoice",
                    invoice_id=invoice_id,
                    actual_id=line["actual_id"],
                )
            elif (line["quantity"], line["amount"]) != (actual["quantity"], actual["amount"]):
                report.add(
                    "mismatched",
                    "proposal line amount",
                    f"line {line['quantity']} / {line['amount']}, "
                    f"billed actual {actual['quantity']} / {actual['amount']}",
                    invoice_id=invoice_id,
                    actual_id=line["actual_id"],
                )
    for proposal_id in fo.proposals.keys() - dv.invoices.keys():
        report.add(
            "mismatched", "proposal", "proposal without a confirmed invoice", invoice_id=proposal_id
        )


def _check_staging(dv: _Dataverse, fo: _Finance, report: CheckReport) -> None:
    """Every synced actual staged exactly once; nothing staged that Dataverse does not hold."""
    staged = Counter(row["actual_id"] for row in fo.staging)
    for actual_id, n in staged.items():
        if n > 1:
            report.add("duplicated", "staging row", f"staged {n} times", actual_id=actual_id)
        if actual_id not in dv.synced:
            report.add(
                "mismatched",
                "staging row",
                "staged actual Dataverse does not hold",
                actual_id=actual_id,
            )
    for actual_id, actual in dv.synced.items():
        if actual_id not in staged:
            report.add(
                "lost",
                "staging row",
                f"{actual['transaction_type']} never staged",
                actual_id=actual_id,
                invoice_id=actual["invoice_id"] or "",
            )


def _check_vouchers(fo: _Finance, report: CheckReport) -> None:
    """Every voucher balances; no actual on two vouchers of one kind."""
    for voucher, total in fo.voucher_sums.items():
        if total != 0:
            report.add(
                "mismatched", "unbalanced voucher", f"entries sum to {total}", voucher=voucher
            )
    for (actual_id, source_type), vouchers in fo.vouchers_per_actual.items():
        if len(vouchers) > 1:
            report.add(
                "duplicated",
                "voucher",
                f"{len(vouchers)} {source_type} vouchers",
                actual_id=actual_id,
                vouchers=",".join(sorted(vouchers)),
            )


def _posted_voucher(dv: _Dataverse, fo: _Finance) -> dict[UUID, str]:
    """Per actual, the voucher Finance posted for it: the customer invoice's for a billed
    actual, else the one its staging row carries (stamped by the journal posting)."""
    posted = {row["actual_id"]: row["voucher"] for row in fo.staging if row["voucher"]}
    for invoice_id, actuals in dv.billed.items():
        invoices = fo.customer_invoices.get(invoice_id, [])
        if len(invoices) == 1:
            for actual in actuals:
                posted[actual["actual_id"]] = invoices[0]["voucher"]
    return posted


def _check_stamps(dv: _Dataverse, fo: _Finance, report: CheckReport) -> None:
    """Every actual Finance posted carries that voucher in Dataverse, and only that one."""
    posted = _posted_voucher(dv, fo)
    for actual_id, actual in dv.synced.items():
        want = posted.get(actual_id)
        have = actual["voucher"]
        if want is not None and have is None:
            report.add(
                "lost",
                "accounting stamp",
                f"Finance posted {want}, Dataverse has none",
                actual_id=actual_id,
                voucher=want,
            )
        elif have is not None and want != have:
            report.add(
                "mismatched",
                "accounting stamp",
                f"Dataverse has {have}, Finance posted {want or 'nothing'}",
                actual_id=actual_id,
                voucher=have,
            )


def _check_order(dv: _Dataverse, fo: _Finance, report: CheckReport) -> None:
    """Where the schema shows which came first, the later effect never precedes the earlier.

    The timestamps compared are `now()` of the transactions that wrote them, on one server
    clock (the three databases share a server in the local stack). A Dataverse stamp is
    written by a transaction that began after it consumed the event Finance's posting
    committed, so it is later than the posting's start; two staging rows of an original and
    its reversal carry the start of the transactions that applied them, equal when one batch
    applied both. Strictly earlier is therefore reordered, never a clock tie.
    """
    for actual_id, actual in dv.synced.items():
        voucher = actual["voucher"]
        stamped_at = actual["accounting_updated_at"]
        posted_at = fo.voucher_posted_at.get(voucher) if voucher else None
        if stamped_at is not None and posted_at is not None and stamped_at < posted_at:
            report.add(
                "reordered",
                "stamp before posting",
                f"stamped {stamped_at.isoformat()}, posted {posted_at.isoformat()}",
                actual_id=actual_id,
                voucher=voucher,
            )
    received = {row["actual_id"]: row["received_at"] for row in fo.staging}
    for row in fo.staging:
        original = row["reverses_actual_id"]
        if original in received and row["received_at"] < received[original]:
            report.add(
                "reordered",
                "reversal staged before its original",
                f"reversal {row['received_at'].isoformat()}, "
                f"original {received[original].isoformat()}",
                actual_id=row["actual_id"],
                original_actual_id=original,
            )
    for proposal_id, proposal in fo.proposals.items():
        corrected = fo.proposals.get(proposal["corrected_proposal_id"])
        if corrected is not None and proposal["received_at"] < corrected["received_at"]:
            report.add(
                "reordered",
                "corrective proposal before its original",
                invoice_id=proposal_id,
                corrected_invoice_id=corrected["proposal_id"],
            )


async def _check_inbox(name: str, conn: asyncpg.Connection, report: CheckReport) -> None:
    """Every event id applied at most once by the service's inbox."""
    for r in await conn.fetch(
        "SELECT event_id, count(*) AS n FROM dwsim_inbox GROUP BY event_id HAVING count(*) > 1"
    ):
        report.add(
            "duplicated", "inbox event", f"{name} applied it {r['n']} times", event_id=r["event_id"]
        )


# Where each service keeps what it could not apply: table -> what a person sees it as.
_PARKED_TABLES: dict[str, dict[str, str]] = {
    "dataverse": {
        "dwsim_parked_event": "parked events",
        "dwsim_outbox_parked": "parked outbox rows",
        "accounting_update_refused": "refused accounting updates",
    },
    "finance": {
        "dwsim_parked_event": "parked events",
        "dwsim_outbox_parked": "parked outbox rows",
        "refused_record": "refused records",
    },
    "bridge": {
        "dwsim_parked_event": "parked events",
        "dwsim_outbox_parked": "parked outbox rows",
    },
}


async def _parked(name: str, conn: asyncpg.Connection) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table, what in _PARKED_TABLES[name].items():
        # Table names come from the constant above, never from input.
        counts[f"{name} {what}"] = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    if name == "finance":
        counts["finance invalid staging rows"] = int(
            await conn.fetchval("SELECT count(*) FROM actuals_staging WHERE status = 'invalid'")
        )
    return counts
