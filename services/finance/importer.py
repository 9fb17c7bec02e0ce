"""Import from staging: periodic and on demand, one transaction per unit of work.

A use-case module shaped like `commands.py` (lock, pure rule of `domain.py`, write through
`repository`), kept apart because an import run is many units of work, not one command: the
periodic `ImportWorker` and `POST /import` in `api.py` both call `import_from_staging`.

Units of work:
- the journal unit of one legal entity: its valid, unimported cost and unbilled-sales rows
  become integration journal lines (draft journals, at most `journal_max_lines` lines each);
- the proposal unit of one open proposal: its staged billed-sales rows become its lines, all
  or none, or the proposal keeps a waiting reason.
Each unit locks what it imports (`SELECT ... FOR UPDATE`, see `repository.lock_*`), so a
periodic run and an API run racing each other never import a staged row twice. The rules are
`domain.plan_import_from_staging`; this module only loads, locks and stores.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import asyncpg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from services.common import tracing
from services.common.backoff import Backoff
from services.common.db import TRANSIENT_DATABASE_ERRORS, DbConnection, database_status
from services.common.logging import get_logger
from services.common.settings import Settings
from services.finance import repository
from services.finance.domain import (
    ImportSettings,
    NumberSequence,
    PeriodUnit,
    ProposalStatus,
    StagingRow,
    billed_still_arriving,
    plan_import_from_staging,
)

log = get_logger(__name__)


@dataclass
class ImportSummary:
    """What one import run did, and what it left out and why."""

    journal_lines_created: int = 0
    journals_created: list[str] = field(default_factory=list)
    proposals_with_lines: list[str] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)
    rows_not_imported: dict[str, str] = field(default_factory=dict)

    @property
    def changed_anything(self) -> bool:
        """Whether the run created journal lines or proposal lines."""
        return bool(self.journal_lines_created or self.proposals_with_lines)


def _import_settings(settings: Settings) -> ImportSettings:
    return ImportSettings(
        period_unit=PeriodUnit(settings.journal_period_unit),
        max_lines_per_journal=settings.journal_max_lines,
    )


async def import_from_staging(
    pool: asyncpg.Pool, settings: Settings, proposal_id: str | None = None
) -> ImportSummary:
    """Run the import for everything, or for one proposal's lines only.

    Running it again is always harmless: a named proposal whose header has not arrived is
    reported as waiting for it, and one that already has its lines is left alone.
    """
    summary = ImportSummary()
    async with pool.acquire() as conn:
        if proposal_id is not None:
            async with conn.transaction():
                exists = await conn.fetchval(
                    "SELECT true FROM project_invoice_proposal WHERE proposal_id = $1",
                    proposal_id,
                )
                if not exists:
                    summary.waiting[proposal_id] = f"no proposal header {proposal_id} received yet"
                else:
                    await _import_proposal(conn, settings, proposal_id, summary)
            return summary
        for legal_entity in await repository.legal_entities_with_pending_journal_rows(conn):
            async with conn.transaction():
                await _import_journals(conn, settings, legal_entity, summary)
        await _import_open_proposals(conn, settings, summary)
        async with conn.transaction():
            await _explain_orphan_billed_rows(conn, summary)
    if summary.changed_anything:
        log.info(
            "import_from_staging_done",
            journal_lines_created=summary.journal_lines_created,
            journals=summary.journals_created,
            proposals_with_lines=summary.proposals_with_lines,
            waiting=len(summary.waiting),
            rows_not_imported=len(summary.rows_not_imported),
        )
    return summary


async def _import_journals(
    conn: DbConnection, settings: Settings, legal_entity: str, summary: ImportSummary
) -> None:
    """The journal unit of one legal entity."""
    locked = await repository.lock_pending_journal_rows(conn, legal_entity)
    if not locked:
        return  # another run imported them while this one waited for the lock
    rows = [repository.staging_row_from_record(r) for r in locked]
    setups = await repository.load_setups(conn, [legal_entity])
    # A contract's fixed rate wins over the table (domain rule 5); one set before the
    # contract's first row arrived applies now.
    rates = await repository.contract_fixed_rates(conn, (row.contract_id for row in rows))
    plan = plan_import_from_staging(rows, [], setups, _import_settings(settings), rates)
    journal_ids = await repository.next_numbers(
        conn, legal_entity, NumberSequence.JOURNAL, len(plan.journals)
    )
    for journal_id, planned in zip(journal_ids, plan.journals, strict=True):
        await repository.insert_journal(
            conn, journal_id, planned.legal_entity, planned.period_start, planned.lines
        )
        await repository.mark_imported(
            conn, [line.actual_id for line in planned.lines], journal_id=journal_id
        )
        summary.journals_created.append(journal_id)
        summary.journal_lines_created += len(planned.lines)
        log.info(
            "integration_journal_created",
            journal_id=journal_id,
            legal_entity=legal_entity,
            lines=len(planned.lines),
        )
    await repository.set_import_reasons(conn, plan.row_reasons)
    summary.rows_not_imported.update(plan.row_reasons)


async def _import_open_proposals(
    conn: DbConnection, settings: Settings, summary: ImportSummary
) -> None:
    """Every open proposal: those whose billed rows are all staged get their lines; those
    still waiting for rows get the count as their reason, all in one statement.

    One read finds which is which: most open proposals of a busy run are still receiving
    rows, and locking, counting and committing each of them, every run, was four round trips
    a proposal for nothing. A proposal found complete is locked and counted again; the
    waiting ones are reported as this read found them.
    """
    waiting: dict[str, str] = {}
    for record in await repository.open_proposals_with_billed_counts(conn):
        proposal_id = str(record["proposal_id"])
        header = repository.proposal_header_from_record(record)
        arriving = billed_still_arriving(record["billed_staged"], header)
        if arriving is not None:
            waiting[proposal_id] = arriving
            continue
        async with conn.transaction():
            await _import_proposal(conn, settings, proposal_id, summary)
    changed = await repository.set_open_waiting_reasons(conn, waiting)
    await tracing.resume(conn, changed)
    for proposal_id in changed:
        log.info("proposal_waiting", invoice_id=proposal_id, reason=waiting[proposal_id])
    summary.waiting.update(waiting)


async def _import_proposal(
    conn: DbConnection, settings: Settings, proposal_id: str, summary: ImportSummary
) -> None:
    """The proposal unit of one open proposal: all its lines, or its waiting reason."""
    # The import runs on its own: its lines belong to the trace the header arrived with.
    await tracing.resume(conn, [proposal_id])
    record = await repository.get_proposal(conn, proposal_id, for_update=True)
    if record["status"] != ProposalStatus.OPEN:
        return  # another run gave it its lines while this one waited for the lock
    header = repository.proposal_header_from_record(record)
    arriving = billed_still_arriving(await repository.count_billed_rows(conn, proposal_id), header)
    if arriving is not None:
        await _wait(conn, record, arriving, summary)
        return
    billed = [
        repository.staging_row_from_record(r)
        for r in await repository.lock_billed_rows(conn, proposal_id)
    ]
    billed_ids = {row.actual_id for row in billed}
    # The unbilled sales a time-and-material line bills must be posted; read them, unlocked:
    # a journal posting still in flight reads as unposted, so the proposal waits another run.
    unbilled: list[StagingRow] = [
        repository.staging_row_from_record(r)
        for r in await repository.unbilled_rows_for(conn, billed)
    ]
    setups = await repository.load_setups(
        conn, {header.legal_entity, *(row.legal_entity for row in billed)}
    )
    rates = await repository.contract_fixed_rates(
        conn, {header.contract_id, *(row.contract_id for row in billed)}
    )
    plan = plan_import_from_staging(
        [*billed, *unbilled], [header], setups, _import_settings(settings), rates
    )
    # The plan also sees unimported unbilled rows (for matching); their journals are the
    # journal unit's business, so only this proposal's billed rows are taken from it.
    reasons = {k: v for k, v in plan.row_reasons.items() if k in billed_ids}
    lines = plan.proposal_lines.get(proposal_id)
    if lines:
        await repository.insert_proposal_lines(conn, lines)
        await repository.mark_imported(
            conn, [line.actual_id for line in lines], proposal_id=proposal_id
        )
        summary.proposals_with_lines.append(proposal_id)
        log.info("proposal_lines_imported", invoice_id=proposal_id, lines=len(lines))
    else:
        reason = plan.waiting.get(proposal_id, "import from staging has not made its lines")
        await _wait(conn, record, reason, summary)
    await repository.set_import_reasons(conn, reasons)
    summary.rows_not_imported.update(reasons)


async def _wait(
    conn: DbConnection, record: asyncpg.Record, reason: str, summary: ImportSummary
) -> None:
    """A proposal keeps waiting: its reason stored (logged when it changes) and reported."""
    proposal_id = str(record["proposal_id"])
    # The record is locked, so its reason is current: most runs find the same reason again
    # (billed rows still arriving) and have nothing to write.
    if reason != record["waiting_reason"]:
        log.info("proposal_waiting", invoice_id=proposal_id, reason=reason)
        await repository.set_open_waiting_reasons(conn, {proposal_id: reason})
    summary.waiting[proposal_id] = reason


async def _explain_orphan_billed_rows(conn: DbConnection, summary: ImportSummary) -> None:
    """Billed rows whose proposal header has not arrived: keep them with that reason."""
    reasons: dict[str, str] = {}
    for row in await repository.orphan_billed_rows(conn):
        invoice_id = str(row["invoice_id"]) if row["invoice_id"] else None
        if invoice_id is None:
            reasons[str(row["actual_id"])] = "billed sales actual has no invoice_id"
        elif row["proposal_status"] is None:
            reasons[str(row["actual_id"])] = f"no proposal header {invoice_id} received yet"
        else:
            reasons[str(row["actual_id"])] = (
                f"proposal {invoice_id} is {row['proposal_status']}: its lines are complete"
            )
    await repository.set_import_reasons(conn, reasons)
    summary.rows_not_imported.update(reasons)


class ImportWorker:
    """The periodic import from staging, every `settings.import_interval_s` seconds."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings
        self._stopping = asyncio.Event()
        self.runs = 0
        self.failed_runs = 0
        # Open proposals the last run found still waiting for billed rows (None: no run yet).
        self.waiting: int | None = None
        self.last_error: str | None = None

    def stop(self) -> None:
        """Finish the run in hand, then return from `run`."""
        self._stopping.set()

    async def run(self) -> None:
        """Import until stopped; a failing run is logged and the next one tries again (after
        a backoff instead of the interval while the database is unreachable)."""
        database = database_status(self._pool)
        backoff = Backoff(self._settings.database_retry_max_backoff_s)
        while not self._stopping.is_set():
            wait = self._settings.import_interval_s
            try:
                # Each proposal's work takes up its invoice's trace (`_import_proposal`).
                with tracing.continued(None, "import from staging"):
                    summary = await import_from_staging(self._pool, self._settings)
                self.waiting = len(summary.waiting)
                self.last_error = None
                backoff.reset()
                database.reachable()
            except TRANSIENT_DATABASE_ERRORS as exc:
                # Each unit of work rolled back on its own; the next run tries them again.
                self.last_error = f"{type(exc).__name__}: {exc}"
                database.failed(exc, "import from staging")
                wait = backoff.next_delay()
                log.warning(
                    "import_from_staging_retry", error=self.last_error, retry_in=round(wait, 2)
                )
            except Exception as exc:  # a failed run must not stop the service's imports
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("import_from_staging_failed", error=self.last_error)
            self.runs += 1
            if self.last_error is not None:
                self.failed_runs += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait)

    async def collect_metrics(self) -> list[Metric]:
        """/metrics: the periodic runs since the process started, by outcome, and the open
        proposals the last run found waiting (read from the run, not counted per scrape)."""
        runs = CounterMetricFamily(
            "dwsim_finance_import_runs",
            "Periodic import-from-staging runs this process made, by outcome",
            labels=["outcome"],
        )
        runs.add_metric(["ok"], self.runs - self.failed_runs)
        runs.add_metric(["failed"], self.failed_runs)
        families: list[Metric] = [runs]
        if self.waiting is not None:
            families.append(
                GaugeMetricFamily(
                    "dwsim_finance_proposals_waiting",
                    "Open invoice proposals still waiting for billed rows at the last import run",
                    value=self.waiting,
                )
            )
        return families
