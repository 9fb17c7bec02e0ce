"""`dwsim chaos` (what `make chaos` runs): every fault under load, judged by an independent checker.

For each fault kind, on a stack of its own started on empty databases: a load of invoices flows
through the whole cycle (entries approved → actuals staged → journals posted → invoices
confirmed → proposals with their lines → posted → accounting detail back in Dataverse), the
fault is injected while the load is in flight and healed after a set time, the run waits for
quiescence with a deadline, and `chaos_checker` reads the three databases and counts what was
lost, duplicated or reordered. Reconcile's verdict is recorded beside it as a second opinion.

The load is what users do: a project manager confirms invoices (a few at a time), an accountant
runs the import and posts journals, receivables clerks (four) post every proposal whose lines are
in. Each of them retries what failed during the fault, as a person would, and every failed
request is counted (by service and status) as what the fault cost the users.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import TopicPartition
from rich.console import Console
from rich.table import Table

from infra import postgres
from schemas.topics import Topic, dlq_name, topic_name
from services.common.errors import DwsimError
from services.common.kafka import make_reader
from services.common.settings import SERVICES, Settings
from services.simulator import faults
from services.simulator.chaos_checker import CheckerUrls, CheckReport, check
from services.simulator.clients import ApiError, Services
from services.simulator.deadlines import DeadlinePassed, until
from services.simulator.processes import ServiceStartFailed
from services.simulator.reconcile import reconcile
from services.simulator.results_file import save_figures
from services.simulator.snapshot import fetch_snapshot
from services.simulator.stack import running_stack, start_afresh
from services.simulator.topic_reader import read_to_end

BUSINESS_DATE = date(2026, 10, 1)
ENTITY = "USPM"
# Project managers confirming at once: enough that confirmations are in flight when the fault
# hits, few enough that the load is a load, not a benchmark.
CONFIRMING_USERS = 4
# Receivables clerks posting at once: one clerk posting 2,000 proposals one after the other
# was the slowest part of the whole cycle (the full run's backlog after healing was mostly
# proposals waiting for the clerk), and measured the clerk, not the recovery.
POSTING_CLERKS = 4
# Contracts created at once while setting the load up (not timed): 2,000 of them one after
# the other took minutes of each fault's run.
SETUP_USERS = 8
# How long a fault lasts before it is healed (the broker's freeze: the 20 s).
FAULT_S = 20.0
# Quiescence must come within this after the fault is healed (the target is 60 s; the paused
# map replays its whole load after it).
AGREEMENT_DEADLINE_S = 600.0
# What the checker may read while it waits for agreement: often enough to time it to a second
# or two, rarely enough not to be a load of its own on 10,000-line runs.
CHECK_EVERY_S = 2.0
# How often a long wait for agreement says what the checker still finds.
PROGRESS_EVERY_S = 30.0


class LoadFailed(DwsimError):
    """The load itself broke (not the stack under test): the run cannot reach agreement."""


@dataclass(frozen=True)
class ChaosSizes:
    """Volumes of one fault's load."""

    invoices: int = 2000
    lines: int = 5
    fault_s: float = FAULT_S
    # Every wait of the run (a phase of the load, agreement after healing) ends by this.
    deadline_s: float = AGREEMENT_DEADLINE_S


@dataclass
class FaultFigures:
    """What one fault's run measured."""

    fault: str
    description: str
    invoices: int = 0
    billed_actuals: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    mismatched: int = 0
    parked: int = 0
    dead_lettered: int = 0
    reconcile_agrees: bool | None = None
    reconcile_summary: str = ""
    agreement_after_heal_s: float | None = None
    # From the later of healing and the last confirmation: the drain of what the load had sent,
    # apart from the rest of the load that a fault healed early still had to send.
    agreement_after_last_confirmation_s: float | None = None
    http_errors_during_fault: dict[str, int] = field(default_factory=dict)
    http_errors_total: int = 0
    max_consumer_lag: int | None = None
    # Maps an alert rule paused during the run and the load's administrator resumed.
    alert_pauses_resumed: list[str] = field(default_factory=list)
    fault_log: list[str] = field(default_factory=list)
    error: str | None = None
    checker: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Nothing lost, duplicated, reordered or mismatched, and the run finished."""
        return (
            self.error is None
            and self.lost == self.duplicated == self.reordered == self.mismatched == 0
        )


# --- the load ------------------------------------------------------------------------------------


class Load:
    """The users' work through the services' APIs, with every failed request counted."""

    def __init__(
        self,
        services: Services,
        sizes: ChaosSizes,
        progress: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.s = services
        self.sizes = sizes
        # Told a line of what the run is doing, for the person watching a long run.
        self.progress = progress
        self.customer_id = ""
        self.project_id = ""
        self.drafts: list[str] = []
        self.confirmed: list[str] = []
        self.posted: set[str] = set()
        self.errors: Counter[str] = Counter()
        self.fault_errors: Counter[str] = Counter()
        self.in_fault = False
        self.confirming_done = asyncio.Event()
        # Set by a fault that holds the maps paused on purpose: the administrator leaves them.
        self.maps_held = False
        # Maps an alert rule paused and the administrator resumed (map slug each time).
        self.alert_pauses_resumed: list[str] = []
        self.clerk_failed: str | None = None

    async def attempt(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """One request; a failure is counted (during the fault apart) and returns None."""
        try:
            return await call()
        except ApiError as exc:
            reason = f"{what}: {exc.status}"
        except httpx.HTTPError as exc:
            reason = f"{what}: {type(exc).__name__}"
        except ServiceStartFailed:
            reason = f"{what}: not running"  # between a kill and the restart
        self.errors[reason] += 1
        if self.in_fault:
            self.fault_errors[reason] += 1
        return None

    async def persist(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """A request retried until it succeeds (a person trying again), for the setup."""
        end = time.monotonic() + self.sizes.deadline_s
        while True:
            answer = await self.attempt(what, call)
            if answer is not None:
                return answer
            if time.monotonic() > end:
                raise DeadlinePassed(f"{what} kept failing for {self.sizes.deadline_s:.0f} s")
            await asyncio.sleep(0.5)

    async def setup(self) -> None:
        """Finance: the legal entity. Dataverse: a customer, a project, and per invoice a
        contract with its ready-to-invoice time entries and a draft proforma."""
        for year in sorted({BUSINESS_DATE.year, date.today().year}):
            await self.s.finance.call(
                "PUT",
                f"/legal-entities/{ENTITY}",
                {"accounting_currency": "USD", "fiscal_year": year},
            )
        account = await self.s.dataverse.post(
            "/accounts", {"name": "Chaos customer", "legal_entity": ENTITY}
        )
        self.customer_id = account["account_id"]
        project = await self.s.dataverse.post(
            "/projects", {"name": "Chaos", "legal_entity": ENTITY, "customer_id": self.customer_id}
        )
        self.project_id = project["project_id"]
        total = self.sizes.invoices
        self.progress(f"setting up {total:,} contracts of {self.sizes.lines} ready lines each")
        contracts = await self._in_order(total, self._contract_with_ready_lines, "contracts")
        await self.journals_posted(len(contracts) * self.sizes.lines)
        self.progress("unbilled sales staged, journals posted; creating the draft invoices")

        async def draft(n: int) -> str:
            answer = await self.s.dataverse.post(
                f"/contracts/{contracts[n]}/invoices", {"invoice_date": str(BUSINESS_DATE)}
            )
            return str(answer["invoice_id"])

        self.drafts = await self._in_order(total, draft, "draft invoices")

    async def _in_order(
        self, count: int, make: Callable[[int], Awaitable[str]], what: str
    ) -> list[str]:
        """`make(0)` … `make(count - 1)`, `SETUP_USERS` at a time, answers in that order; a
        progress line every tenth (none for a few dozen)."""
        answers: list[str] = [""] * count
        numbers = iter(range(count))
        done = 0
        step = max(50, count // 10)

        async def user() -> None:
            nonlocal done
            for n in numbers:
                answers[n] = await make(n)
                done += 1
                if done % step == 0 and done < count:
                    self.progress(f"{done:,} of {count:,} {what}")

        await asyncio.gather(*(user() for _ in range(SETUP_USERS)))
        return answers

    async def _contract_with_ready_lines(self, n: int) -> str:
        contract = await self.s.dataverse.post(
            "/contracts",
            {
                "name": f"Chaos contract {n}",
                "legal_entity": ENTITY,
                "customer_id": self.customer_id,
                "currency": "USD",
                "lines": [
                    {
                        "name": "Time",
                        "project_id": self.project_id,
                        "billing_method": "time_and_material",
                        "bill_rate": "200",
                        "cost_rate": "100",
                    }
                ],
            },
        )
        line_id = contract["lines"][0]["contract_line_id"]
        approved = await self.s.dataverse.post(
            "/entries/approve-batch",
            {
                "entries": [
                    {
                        "transaction_class": "time",
                        "project_id": self.project_id,
                        "contract_line_id": line_id,
                        "quantity": str(4 + i % 5),
                        "document_date": str(BUSINESS_DATE),
                        "resource": f"R{n}-{i}",
                        "role": "Developer",
                    }
                    for i in range(self.sizes.lines)
                ]
            },
        )
        ready = [
            a["actual_id"]
            for e in approved["entries"]
            for a in e["actuals"]
            if a["transaction_type"] == "unbilled_sales"
        ]
        await self.s.dataverse.post("/actuals/ready", {"actual_ids": ready})
        return str(contract["contract_id"])

    async def journals_posted(self, unbilled: int) -> None:
        """Wait until the unbilled sales are staged, then import and post the journals (the
        import of proposal lines needs them posted, domain.md step 8)."""

        async def staged() -> bool:
            counted = await self.s.finance.get("/staging/count", transaction_type="unbilled_sales")
            return int(counted["count"]) >= unbilled

        await until(staged, f"{unbilled} unbilled sales staged", self.sizes.deadline_s, 0.5)
        await self.accountant_round()

    async def accountant_round(self) -> None:
        """Run the import from staging and post every journal."""
        await self.attempt("finance import", lambda: self.s.finance.post("/import", {}))
        await self.attempt("finance post journals", lambda: self.s.finance.post("/journals/post"))

    async def confirm_all(self) -> None:
        """The project managers confirm every draft, a few at a time; a confirmation that
        failed is tried again once the invoice shows it is still a draft."""
        waiting = iter(self.drafts)

        async def user() -> None:
            for invoice_id in waiting:
                await self._confirm(invoice_id)
                self.confirmed.append(invoice_id)

        await asyncio.gather(*(user() for _ in range(CONFIRMING_USERS)))
        self.confirming_done.set()

    async def _confirm(self, invoice_id: str) -> None:
        end = time.monotonic() + self.sizes.deadline_s
        while time.monotonic() < end:
            if await self.attempt(
                "dataverse confirm",
                lambda: self.s.dataverse.post(f"/invoices/{invoice_id}/confirm"),
            ):
                return
            invoice = await self.attempt(
                "dataverse invoice", lambda: self.s.dataverse.get(f"/invoices/{invoice_id}")
            )
            if invoice is not None and invoice.get("status") == "confirmed":
                return  # the failed answer was lost, not the confirmation
            await asyncio.sleep(0.5)
        raise DeadlinePassed(f"invoice {invoice_id} could not be confirmed")

    async def administrator_round(self) -> None:
        """Resume a map an alert rule paused, as the administrator does once the alert is
        seen: under this load a slow side can be taken for a down one (ten receipt time-outs
        in 15 minutes pause the map), and a paused map holds its records until someone
        resumes it. Each resume is counted in the figures, and told."""
        if self.maps_held:
            return
        maps = await self.attempt("bridge maps", lambda: self.s.bridge.get("/maps"))
        for table_map in maps or []:
            if table_map["state"] != "paused":
                continue
            slug = table_map["slug"]
            if await self.attempt(
                "bridge resume",
                lambda slug=slug: self.s.bridge.post(f"/maps/{slug}/resume"),  # type: ignore[misc]
            ):
                self.alert_pauses_resumed.append(slug)
                self.progress(f"map {slug} paused by an alert rule; the administrator resumed it")

    async def clerk(self, stop: asyncio.Event) -> None:
        """Until stopped: resume a map an alert paused, import and post journals, then post
        every proposal whose lines are in (the administrator, the accountant and the
        receivables clerk at work)."""
        try:
            await self._clerk_rounds(stop)
        except Exception as exc:
            # Told at once and ends the wait for agreement: without the clerk no proposal
            # is posted, and the run would wait out its deadline for nothing.
            self.clerk_failed = f"{type(exc).__name__}: {exc}"
            self.progress(f"[red]the load's clerk failed[/red]: {self.clerk_failed}")
            raise

    async def _clerk_rounds(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.administrator_round()
            await self.accountant_round()
            ready = await self.attempt(
                "finance proposals",
                lambda: self.s.finance.get("/proposals", status="lines_imported"),
            )
            waiting = iter([p["proposal_id"] for p in ready or []])
            await asyncio.gather(*(self._post_each(waiting) for _ in range(POSTING_CLERKS)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    async def _post_each(self, waiting: Iterator[str]) -> None:
        """One clerk: post the proposals it takes from those waiting (shared by the clerks,
        so each is posted by one of them)."""
        for pid in waiting:
            if await self.attempt(
                "finance post proposal",
                lambda pid=pid: self.s.finance.post(  # type: ignore[misc]
                    f"/proposals/{pid}/post", token=self.s.clerk_token
                ),
            ):
                self.posted.add(pid)


# --- consumer lag --------------------------------------------------------------------------------


class LagWatch:
    """The largest consumer lag seen: each group's committed offsets against the high-water
    marks that fetch responses carry (ListOffsets under-reports on the default broker,
    DESIGN.md), read by a group-less consumer that follows every consumed topic."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.max_lag: int | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Sample every second until stopped; a broker that is down just skips samples."""
        while not stop.is_set():
            try:
                await self._follow(stop)
            except Exception:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    async def _follow(self, stop: asyncio.Event) -> None:
        names = [topic_name(t, self.settings.topic_prefix) for t in Topic]
        follower = make_reader(self.settings, fetch_max_wait_ms=100)
        # One group-less handle per service group, to read its committed offsets (OffsetFetch,
        # without joining the group: the services keep their partitions).
        groups = [
            make_reader(self.settings, group_id=f"{self.settings.topic_prefix}{service}")
            for service in SERVICES
        ]
        await follower.start()
        try:
            for group in groups:
                await group.start()
            await follower.topics()
            partitions = [
                TopicPartition(n, p)
                for n in names
                for p in sorted(follower.partitions_for_topic(n) or ())
            ]
            follower.assign(partitions)
            await follower.seek_to_beginning(*partitions)
            next_sample = 0.0
            while not stop.is_set():
                await follower.getmany(timeout_ms=200, max_records=10_000)
                if time.monotonic() < next_sample:
                    continue
                next_sample = time.monotonic() + 1.0
                for group in groups:
                    lag = 0
                    for tp in partitions:
                        mark = follower.highwater(tp)
                        # Bounded: against a dead broker the lookup of the group's
                        # coordinator would retry for ever.
                        committed = await asyncio.wait_for(group.committed(tp), 2)
                        if mark is not None and committed is not None:
                            lag += max(0, mark - committed)
                    self.max_lag = max(self.max_lag or 0, lag)
        finally:
            await follower.stop()
            for group in groups:
                await group.stop()


# --- the fault kinds -----------------------------------------------------------------------------


@dataclass
class ChaosContext:
    """What a fault acts on: the stack's settings, the clients, the load, its log."""

    settings: Settings
    load: Load
    sizes: ChaosSizes
    started_at: datetime
    log: list[str] = field(default_factory=list)

    @property
    def services(self) -> Services:
        """The clients the load uses (new ones after a service restarted)."""
        return self.load.s

    async def reconnect(self) -> None:
        """Clients for the services' current addresses: a restarted service keeps its port
        when it is free, and takes another when the old one is not released yet."""
        old, self.load.s = self.load.s, Services(self.settings)
        await old.close()

    def say(self, what: str) -> None:
        """Record what the fault did, and tell the person watching."""
        self.log.append(what)
        self.load.progress(what)

    async def confirmed_at_least(self, share: float) -> None:
        """Wait until this share of the invoices is confirmed (the load is in flight)."""
        target = max(1, int(share * len(self.load.drafts)))

        async def reached() -> bool:
            return len(self.load.confirmed) >= target or self.load.confirming_done.is_set()

        await until(reached, f"{target} confirmations", self.sizes.deadline_s, 0.1)


Inject = Callable[[ChaosContext], Awaitable[None]]


async def _service_killed(ctx: ChaosContext, service: str, times: int) -> None:
    for n in range(times):
        await ctx.confirmed_at_least((n + 1) / (times + 1))
        await asyncio.to_thread(faults.kill_and_restart, ctx.settings, service)
        await ctx.reconnect()
        ctx.say(f"{service} SIGKILLed and restarted")


async def bridge_killed(ctx: ChaosContext) -> None:
    """The bridge SIGKILLed and restarted, twice during the run."""
    await _service_killed(ctx, "bridge", 2)


async def dataverse_killed(ctx: ChaosContext) -> None:
    """Dataverse SIGKILLed and restarted mid-run."""
    await _service_killed(ctx, "dataverse", 1)


async def finance_killed(ctx: ChaosContext) -> None:
    """Finance SIGKILLed and restarted mid-run."""
    await _service_killed(ctx, "finance", 1)


async def broker_restarted_empty(ctx: ChaosContext) -> None:
    """The broker SIGKILLed and restarted empty; the operator rewinds the consumers and replays
    the outboxes."""
    await ctx.confirmed_at_least(0.4)
    await faults.kill_broker_and_restart_empty(ctx.settings)
    ctx.say("broker SIGKILLed, restarted empty, topics provisioned")
    # What the services had published before the crash and their consumers had not applied is
    # gone with the log; the operator rewinds every consumer to the new log's beginning (their
    # positions of the old log would skip what lands below them) and has each service publish
    # its outbox again (the inboxes drop what was applied). Everything since the load began:
    # the crash can take any of it.
    replayed = await faults.recover_lost_log(ctx.services, ctx.started_at)
    ctx.say(f"outboxes replayed: {replayed}")


async def broker_frozen(ctx: ChaosContext) -> None:
    """The broker stopped with SIGSTOP for the fault's time, then SIGCONT."""
    await ctx.confirmed_at_least(0.4)
    async with faults.broker_frozen(ctx.settings):
        ctx.say(f"broker SIGSTOPped for {ctx.sizes.fault_s:.0f} s")
        await asyncio.sleep(ctx.sizes.fault_s)
    ctx.say("broker SIGCONTed")


async def postgres_crashed(ctx: ChaosContext) -> None:
    """PostgreSQL stopped hard (immediate shutdown) and started again."""
    await ctx.confirmed_at_least(0.4)
    await faults.crash_and_restart_postgres(ctx.settings, "immediate", down_s=3)
    ctx.say("PostgreSQL immediate shutdown, down 3 s, restarted")


async def map_paused(ctx: ChaosContext) -> None:
    """Both table maps paused for the whole load, resumed once every invoice is confirmed."""
    ctx.load.maps_held = True
    for table_map in faults.MAPS:
        await faults.pause_map(ctx.services, table_map)
    ctx.say("maps paused")
    await ctx.load.confirming_done.wait()
    for table_map in faults.MAPS:
        await faults.resume_map(ctx.services, table_map, deadline_s=ctx.sizes.deadline_s)
    ctx.load.maps_held = False
    ctx.say("maps resumed and caught up")


async def poison(ctx: ChaosContext) -> None:
    """Malformed and schema-invalid events mixed into every consumed topic during the load."""
    for share in (0.2, 0.5, 0.8):
        await ctx.confirmed_at_least(share)
        sent = await faults.inject_poison(ctx.settings)
        ctx.say(f"{sent} poison events sent")


async def duplicates(ctx: ChaosContext) -> None:
    """Every message of every topic delivered twice, keys out of order (re-published from
    what the topics hold), mid-load and again once every invoice is confirmed."""
    for when in ("mid-load", "after confirmations"):
        if when == "mid-load":
            await ctx.confirmed_at_least(0.5)
        else:
            await ctx.load.confirming_done.wait()
            # Postings of the last proposals are then under way: their accounting is in the
            # second capture.
            await asyncio.sleep(ctx.sizes.fault_s / 4)
        sent = {
            str(topic): await faults.redeliver_topic(ctx.settings, topic, seed=n)
            for n, topic in enumerate(Topic)
        }
        ctx.say(f"{when}: re-published {sum(sent.values())} messages {sent}")


async def bridge_worker_killed(ctx: ChaosContext) -> None:
    """A second bridge worker joins the group; SIGKILLed mid-run (a rebalance under load)."""
    worker = faults.start_bridge_worker(ctx.settings)
    try:
        ctx.say(f"second bridge worker started (pid {worker.pid})")
        await ctx.confirmed_at_least(0.5)
        faults.kill_bridge_worker(ctx.settings, worker)
        ctx.say("second bridge worker SIGKILLed")
    finally:
        faults.stop_bridge_worker(ctx.settings, worker)


async def slow_postgres(ctx: ChaosContext) -> None:
    """Finance's staging table locked for seconds at a time: import, staging writes, stamps and
    the bridge's receipt time-outs run against a slow database."""
    await ctx.confirmed_at_least(0.3)
    async with faults.table_locked(ctx.settings, "finance", "actuals_staging", hold_s=5):
        ctx.say(f"finance actuals_staging locked 5 s at a time for {ctx.sizes.fault_s:.0f} s")
        await asyncio.sleep(ctx.sizes.fault_s)
    ctx.say("lock released")


@dataclass(frozen=True)
class FaultKind:
    """A fault of the chaos run: its name (`--fault NAME`) and how it is injected and healed."""

    name: str
    inject: Inject

    @property
    def description(self) -> str:
        """The first paragraph of its function's docstring, on one line."""
        return " ".join((self.inject.__doc__ or "").strip().split("\n\n")[0].split())


FAULTS: tuple[FaultKind, ...] = (
    FaultKind("bridge-kill", bridge_killed),
    FaultKind("dataverse-kill", dataverse_killed),
    FaultKind("finance-kill", finance_killed),
    FaultKind("broker-restart-empty", broker_restarted_empty),
    FaultKind("broker-freeze", broker_frozen),
    FaultKind("postgres-crash", postgres_crashed),
    FaultKind("map-paused", map_paused),
    FaultKind("poison", poison),
    FaultKind("duplicates", duplicates),
    FaultKind("bridge-worker-kill", bridge_worker_killed),
    FaultKind("slow-postgres", slow_postgres),
)
FAULT_NAMES = tuple(f.name for f in FAULTS)


# --- one fault's run -----------------------------------------------------------------------------


def fault_settings(base: Settings, fault: str) -> Settings:
    """A stack of the fault's own: home, topics, groups, databases and roles."""
    tag = fault.replace("-", "_")
    return base.model_copy(
        update={
            "home": base.home / "chaos" / fault,
            "topic_prefix": f"{base.topic_prefix}chaos-{fault}-",
            "database_prefix": f"{base.database_prefix}chaos_{tag}_",
            **{f"{service}_database_url": None for service in SERVICES},
        }
    )


def run_fault(base: Settings, kind: FaultKind, sizes: ChaosSizes, console: Console) -> FaultFigures:
    """One fault under load on a stack of its own, started on empty databases."""
    own = fault_settings(base, kind.name)
    figures = FaultFigures(kind.name, kind.description)
    start_afresh(own)
    with running_stack(own):
        asyncio.run(_run_fault(own, kind, sizes, figures, console))
    if figures.passed:
        # A passed fault's databases (over a GB at the defaults; 13 GB for a full run) are
        # what nobody reads again: its figures and logs stay. A failed one keeps everything.
        postgres.remove_data(own)
    return figures


async def _run_fault(
    settings: Settings, kind: FaultKind, sizes: ChaosSizes, figures: FaultFigures, console: Console
) -> None:
    services = Services(settings)
    began = time.monotonic()

    def progress(line: str) -> None:
        console.print(f"  [dim]{time.monotonic() - began:6.1f} s[/dim]  {line}")

    load = Load(services, sizes, progress)
    try:
        console.print(f"[bold]{kind.name}[/bold]: {kind.description}")
        await load.setup()
        progress(f"confirming {len(load.drafts):,} invoices, the fault injected meanwhile")
        ctx = ChaosContext(settings, load, sizes, datetime.now(UTC))
        stop = asyncio.Event()
        lag = LagWatch(settings)
        background = [
            asyncio.create_task(load.clerk(stop)),
            asyncio.create_task(lag.run(stop)),
        ]
        confirming = asyncio.create_task(load.confirm_all())
        try:
            load.in_fault = True
            await kind.inject(ctx)
            load.in_fault = False
            healed = time.monotonic()
            progress("fault healed")
            await confirming
            all_confirmed = time.monotonic()
            progress("every invoice confirmed; waiting for the checker to find agreement")
            report = await _wait_for_agreement(settings, load, sizes.deadline_s, progress)
            agreed = time.monotonic()
            figures.agreement_after_heal_s = round(agreed - healed, 1)
            figures.agreement_after_last_confirmation_s = round(
                agreed - max(healed, all_confirmed), 1
            )
            progress(f"agreement {figures.agreement_after_heal_s} s after healing")
        except (DeadlinePassed, LoadFailed) as exc:
            figures.error = str(exc)
            report = await _check(settings)
        finally:
            stop.set()
            confirming.cancel()
            # The lag watch may be inside a call to a broker that is gone: it is cancelled,
            # not waited for.
            background[1].cancel()
            await asyncio.gather(*background, confirming, return_exceptions=True)
        _fill(figures, report, load, lag, ctx)
        figures.dead_lettered = await _dead_lettered(settings)
        verdict = reconcile(await fetch_snapshot(load.s))
        figures.reconcile_agrees = verdict.agree
        figures.reconcile_summary = verdict.summary()
    except (ApiError, httpx.HTTPError, DeadlinePassed) as exc:
        # Where it failed, for the person reading the figures: the innermost frame of ours.
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if "services" in f.filename]
        where = " (at " + " < ".join(f"{f.name}:{f.lineno}" for f in frames[::-1][:4]) + ")"
        figures.error = f"{type(exc).__name__}: {exc}{where}"
    finally:
        await load.s.close()


async def _check(settings: Settings) -> CheckReport:
    # Grants on the tables as they are now (provisioning is idempotent): on a server whose
    # admin cannot set default privileges for the service roles, this is what lets it read.
    await postgres.provision_async(settings)
    return await check(CheckerUrls(*(postgres.checker_database_url(settings, s) for s in SERVICES)))


async def _wait_for_agreement(
    settings: Settings, load: Load, deadline_s: float, progress: Callable[[str], None]
) -> CheckReport:
    """The checker, every few seconds, until it finds nothing and every invoice is posted and
    stamped (the report of the last reading; a deadline ends the wait). What it still finds
    is told every `PROGRESS_EVERY_S`."""
    last: list[CheckReport] = []
    told = time.monotonic()

    async def agreed() -> CheckReport | None:
        nonlocal told
        if load.clerk_failed is not None:
            raise LoadFailed(f"the load's clerk failed: {load.clerk_failed}")
        try:
            report = await _check(settings)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return None  # PostgreSQL is restarting: the next reading will tell
        last[:] = [report]
        if not report.clean and time.monotonic() - told >= PROGRESS_EVERY_S:
            told = time.monotonic()
            progress(f"checker: {report.summary()}")
        return report if report.clean else None

    try:
        return await until(
            agreed,
            "the checker to find every invoice posted and stamped, nothing lost or doubled",
            deadline_s,
            CHECK_EVERY_S,
            last_seen=lambda: last[0].summary() if last else "no reading",
        )
    except DeadlinePassed:
        if last:
            return last[0]
        raise


def _fill(
    figures: FaultFigures, report: CheckReport, load: Load, lag: LagWatch, ctx: ChaosContext
) -> None:
    figures.invoices = report.read.get("confirmed invoices", 0)
    figures.billed_actuals = report.read.get("billed actuals", 0)
    counts = report.counts()
    figures.lost = counts["lost"]
    figures.duplicated = counts["duplicated"]
    figures.reordered = counts["reordered"]
    figures.mismatched = counts["mismatched"]
    figures.parked = report.parked_total
    figures.http_errors_during_fault = dict(load.fault_errors)
    figures.http_errors_total = sum(load.errors.values())
    figures.max_consumer_lag = lag.max_lag
    figures.alert_pauses_resumed = list(load.alert_pauses_resumed)
    figures.fault_log = list(ctx.log)
    figures.checker = report.to_json()
    # A run of thousands of findings would make the JSON unreadable: the first 200 are kept.
    figures.checker["findings"] = figures.checker["findings"][:200]


async def _dead_lettered(settings: Settings) -> int:
    total = 0
    for topic in Topic:
        total += len(
            await read_to_end(settings, dlq_name(topic_name(topic, settings.topic_prefix)))
        )
    return total


# --- the whole run -------------------------------------------------------------------------------


def run_chaos(
    base: Settings, names: tuple[str, ...], sizes: ChaosSizes, console: Console, path: Path
) -> dict[str, Any]:
    """Each named fault in turn on its own stack; the figures of all, as saved to `path`.

    The figures so far are written after every fault (`"finished": false` until the last):
    a run of hours that is stopped keeps what it measured."""
    started = datetime.now(UTC)
    results: list[FaultFigures] = []

    def figures(finished: bool) -> dict[str, Any]:
        return {
            "started_at": started.isoformat(),
            "seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
            "sizes": asdict(sizes),
            "finished": finished,
            "faults": [{**asdict(f), "passed": f.passed} for f in results],
            "passed": all(f.passed for f in results),
        }

    for kind in FAULTS:
        if kind.name in names:
            done = run_fault(base, kind, sizes, console)
            results.append(done)
            console.print(f"  {_one_line(done)}")
            save_figures(figures(finished=False), path)
    final = figures(finished=True)
    save_figures(final, path)
    return final


def _one_line(f: FaultFigures) -> str:
    """A fault's verdict in one line, for the progress of a long run."""
    verdict = "passed" if f.passed else "[red]FAILED[/red]"
    line = (
        f"{f.fault}: {verdict} — {f.invoices:,} invoices, {f.billed_actuals:,} billed actuals, "
        f"{f.lost} lost, {f.duplicated} duplicated, {f.reordered} reordered, "
        f"{f.mismatched} mismatched; "
    )
    if f.agreement_after_heal_s is None:
        line += "no agreement"
    else:
        line += (
            f"agreement {f.agreement_after_heal_s} s after healing, "
            f"{_seconds(f.agreement_after_last_confirmation_s)} s after the last confirmation"
        )
    if f.alert_pauses_resumed:
        line += f"; maps paused by an alert and resumed: {', '.join(f.alert_pauses_resumed)}"
    return line if f.error is None else f"{line}; {f.error}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else str(value)


def print_results(console: Console, results: dict[str, Any]) -> None:
    """The table of figures, one row per fault."""
    table = Table(title="dwsim chaos: every fault under load, judged by the checker")
    for column in (
        "fault",
        "invoices",
        "billed",
        "lost",
        "dup",
        "reord",
        "mism",
        "parked",
        "dlq",
        "reconcile",
        "agree after heal (s)",
        "after last confirm (s)",
        "HTTP errors in fault",
        "max lag",
    ):
        table.add_column(column)
    for f in results["faults"]:
        errors = ", ".join(f"{k} ×{v}" for k, v in f["http_errors_during_fault"].items())
        table.add_row(
            f["fault"] + ("" if f["error"] is None else " [red](error)[/red]"),
            str(f["invoices"]),
            str(f["billed_actuals"]),
            str(f["lost"]),
            str(f["duplicated"]),
            str(f["reordered"]),
            str(f["mismatched"]),
            str(f["parked"]),
            str(f["dead_lettered"]),
            {True: "agree", False: "differ", None: "-"}[f["reconcile_agrees"]],
            _seconds(f["agreement_after_heal_s"]),
            _seconds(f.get("agreement_after_last_confirmation_s")),
            errors or "0",
            "-" if f["max_consumer_lag"] is None else str(f["max_consumer_lag"]),
        )
    console.print(table)
    for f in results["faults"]:
        if f["error"]:
            console.print(f"[red]{f['fault']}[/red]: {f['error']}")
