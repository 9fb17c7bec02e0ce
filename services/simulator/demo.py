"""`dwsim demo`: the whole flow through the services' APIs, phase by phase, then reconciliation.

Approve entries → mark ready → unbilled actuals sync to staging → import → post integration
journals → create and edit proformas → confirm → the bridge syncs headers and billed sales →
import makes proposal lines (after the new unbilled sales are journal-posted) → post proposals →
accounting detail flows back to the Dataverse actuals.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from services.simulator.builders import (
    Contract,
    approve_entry,
    confirm_invoice,
    create_contract,
    create_customer,
    set_up_legal_entity,
)
from services.simulator.clients import ApiError, Services
from services.simulator.reconcile import Report, reconcile
from services.simulator.seed import EXCHANGE_RATES, LEGAL_ENTITIES, DemoPlan
from services.simulator.snapshot import fetch_snapshot


class DemoFailed(RuntimeError):
    """A phase did not finish before its deadline; the message says where it stopped."""


@dataclass
class DemoResult:
    """Figures of one demo run."""

    invoices: int
    phases: dict[str, float] = field(default_factory=dict)
    confirm_to_lines_s: list[float] = field(default_factory=list)
    report: Report | None = None

    def figures(self) -> dict[str, Any]:
        """Throughput and latency, for the report and `--json`."""
        lat = sorted(self.confirm_to_lines_s)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 3) if lat else None

        total = sum(self.phases.values())
        return {
            "invoices": self.invoices,
            "seconds_total": round(total, 2),
            "phases_s": {k: round(v, 2) for k, v in self.phases.items()},
            "invoices_per_s": round(self.invoices / total, 2) if total else None,
            "confirm_to_proposal_lines_p50_s": pct(0.5),
            "confirm_to_proposal_lines_p99_s": pct(0.99),
            # Microsoft's live-sync limits (docs/bridge.md): what production would refuse.
            "transactions_would_fail_in_production": (
                len(self.report.would_fail) if self.report else 0
            ),
        }


def new_progress() -> Progress:
    """The progress display used for each phase."""
    return Progress(
        TextColumn("{task.description:<34}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        # Progress goes to stderr so that `--json` leaves stdout to the result.
        console=Console(stderr=True),
    )


async def poll_until(
    check: Callable[[], Awaitable[int]],
    total: int,
    what: str,
    progress: Progress,
    deadline_s: float,
    on_idle: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Advance a progress bar with `check()` until it reaches `total` or the deadline."""
    task = progress.add_task(what, total=total)
    end = time.monotonic() + deadline_s
    while True:
        done = await check()
        progress.update(task, completed=min(done, total))
        if done >= total:
            return
        if time.monotonic() > end:
            raise DemoFailed(f"{what}: {done} of {total} after {deadline_s:.0f} s")
        if on_idle is not None:
            await on_idle()
        await asyncio.sleep(0.25)


class DemoRun:
    """Drives one demo plan through the services."""

    def __init__(
        self, services: Services, plan: DemoPlan, progress: Progress, deadline_s: float = 180
    ) -> None:
        self.s = services
        self.plan = plan
        self.progress = progress
        self.deadline_s = deadline_s
        self.result = DemoResult(len(plan.contracts))
        self.contract_ids: dict[int, str] = {}
        self.contracts: dict[int, Contract] = {}
        self.synced_actuals = 0
        self.staged_before = 0
        self.invoice_ids: dict[int, str] = {}
        self.confirmed_at: dict[str, float] = {}

    async def _phase(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        started = time.monotonic()
        await work()
        self.result.phases[name] = time.monotonic() - started

    async def run(self) -> DemoResult:
        """Every phase in order, then reconciliation."""
        await self._phase("setup", self.setup)
        await self._phase("approve and mark ready", self.approve_entries)
        await self._phase("sync and post journals", self.sync_and_post_journals)
        await self._phase("proformas: create, edit, confirm", self.invoice)
        await self._phase("proposal lines", self.import_proposal_lines)
        await self._phase("post proposals", self.post_proposals)
        await self._phase("accounting detail back", self.wait_accounting_back)
        self.result.report = reconcile(await fetch_snapshot(self.s))
        return self.result

    async def setup(self, skip_rates: tuple[tuple[str, str], ...] = ()) -> None:
        """Finance: legal entities, fiscal years, rates. Dataverse: customers, projects."""
        years = sorted({self.plan.business_date.year, date.today().year})
        task = self.progress.add_task("setup legal entities", total=len(LEGAL_ENTITIES))
        for entity, (currency, _) in sorted(LEGAL_ENTITIES.items()):
            rates = {
                src: rate
                for (src, dst), rate in EXCHANGE_RATES.items()
                if dst == currency and (src, dst) not in skip_rates
            }
            await set_up_legal_entity(self.s, entity, currency, years, rates)
            self.progress.advance(task)
        task = self.progress.add_task("create contracts", total=len(self.plan.contracts))
        accounts: dict[tuple[str, str], str] = {}
        for plan in self.plan.contracts:
            key = (plan.customer, plan.legal_entity)
            if key not in accounts:
                accounts[key] = await create_customer(self.s, plan.customer, plan.legal_entity)
            contract = await create_contract(self.s, plan, accounts[key], self.plan.business_date)
            self.contracts[plan.index] = contract
            self.contract_ids[plan.index] = contract.contract_id
            self.progress.advance(task)

    async def approve_entries(self) -> None:
        """Approve every entry and mark its chargeable unbilled sales ready to invoice."""
        # Earlier runs' rows stay in staging: count what this run adds.
        self.staged_before = await self._staged()
        entries = [(c, e) for c in self.plan.contracts for e in c.entries]
        task = self.progress.add_task("approve entries", total=len(entries))
        for plan, entry in entries:
            actuals = await approve_entry(self.s, self.contracts[plan.index], entry)
            self.synced_actuals += sum(1 for a in actuals if not a.get("skip_sync"))
            self.progress.advance(task)

    async def _staged(self) -> int:
        return int((await self.s.finance.get("/staging/count"))["count"])

    async def _staged_now(self) -> int:
        return await self._staged() - self.staged_before

    async def _import_and_post(self) -> None:
        await self.s.finance.post("/import", {})
        await self.s.finance.post("/journals/post", {})

    async def sync_and_post_journals(self, post: bool = True) -> None:
        """Wait for the actuals in staging, import them and (unless not `post`) post journals."""
        await poll_until(
            self._staged_now,
            self.synced_actuals,
            "actuals reach staging",
            self.progress,
            self.deadline_s,
        )
        if post:
            await self._import_and_post()
        else:
            await self.s.finance.post("/import", {})

    async def invoice(self, limit: int | None = None) -> None:
        """Create each contract's proforma, apply the planned edits, confirm it.

        With `limit`, only that many of the contracts not yet invoiced (for faults mid-stream).
        """
        todo = [c for c in self.plan.contracts if c.index not in self.invoice_ids][:limit]
        task = self.progress.add_task("proformas confirmed", total=len(todo))
        for plan in todo:
            iid = await confirm_invoice(
                self.s,
                self.contract_ids[plan.index],
                self.plan.business_date,
                plan.quantity_edits,
            )
            self.confirmed_at[iid] = time.monotonic()
            self.invoice_ids[plan.index] = iid
            self.progress.advance(task)

    async def import_proposal_lines(self) -> None:
        """Run import and journal posting until every proposal has its lines."""
        waiting = set(self.invoice_ids.values())

        async def with_lines() -> int:
            for iid in list(waiting):
                try:
                    proposal = await self.s.finance.get(f"/proposals/{iid}")
                except ApiError as exc:
                    if exc.status == 404:  # its header has not reached Finance yet
                        continue
                    raise
                except httpx.TransportError:  # Finance is restarting (a fault scenario)
                    continue
                if proposal.get("lines"):
                    waiting.discard(iid)
                    self.result.confirm_to_lines_s.append(time.monotonic() - self.confirmed_at[iid])
            return len(self.invoice_ids) - len(waiting)

        await poll_until(
            with_lines,
            len(self.invoice_ids),
            "proposals with all lines",
            self.progress,
            self.deadline_s,
            on_idle=self._import_and_post,
        )

    async def post_proposals(self) -> None:
        """The receivables clerk posts every proposal."""
        task = self.progress.add_task("proposals posted", total=len(self.invoice_ids))
        for iid in self.invoice_ids.values():
            await self.s.finance.post(f"/proposals/{iid}/post", token=self.s.clerk_token)
            self.progress.advance(task)

    async def wait_accounting_back(self) -> None:
        """Wait until every billed-sales actual in Dataverse carries its voucher."""

        async def stamped() -> int:
            done = 0
            for iid in self.invoice_ids.values():
                billed = await self.s.dataverse.get(
                    "/actuals", invoice_id=iid, transaction_type="billed_sales"
                )
                done += bool(billed) and all(a.get("voucher") for a in billed)
            return done

        await poll_until(
            stamped,
            len(self.invoice_ids),
            "accounting detail in Dataverse",
            self.progress,
            self.deadline_s,
        )


def money(value: Any) -> Decimal:
    """A JSON amount as Decimal."""
    return Decimal(str(value))
