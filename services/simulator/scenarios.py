"""Named, deterministic scenarios: each replays a pain real users know and ends reconciled.

Each scenario runs on a stack of its own (its own `DWSIM_HOME` under `.dwsim/scenarios/`), so
what one leaves behind never colours another's reconciliation. Faults are injected by the
scenario itself: stopping and starting the processes it owns, sending bad events.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TypeVar

from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.progress import Progress

from infra import broker
from infra.topics import provision_async
from schemas.topics import Topic, dlq_name, topic_name
from services.common.kafka import make_producer
from services.common.settings import Settings
from services.simulator.clients import ApiError, Services
from services.simulator.demo import DemoRun, new_progress
from services.simulator.processes import start_service, stop_service
from services.simulator.reconcile import Report, reconcile
from services.simulator.seed import ContractPlan, DemoPlan, EntryPlan, plan_demo
from services.simulator.snapshot import fetch_snapshot
from services.simulator.stack import running_stack

Step = Callable[["ScenarioContext"], Awaitable[None]]


@dataclass
class ScenarioContext:
    """What a scenario's steps work with."""

    settings: Settings
    services: Services
    console: Console

    def say(self, text: str) -> None:
        """Narrate a step."""
        self.console.print(f"  • {text}")


@dataclass(frozen=True)
class Scenario:
    """A named scenario: what it shows, its settings, and its steps."""

    name: str
    description: str
    steps: Step
    settings: dict[str, object] | None = None


BUSINESS_DATE = date(2026, 10, 1)


def _run_for(ctx: ScenarioContext, plan: DemoPlan, progress: Progress) -> DemoRun:
    return DemoRun(ctx.services, plan, progress, deadline_s=240)


async def _finish(run: DemoRun) -> None:
    """From confirmed invoices to accounting detail back in Dataverse."""
    await run.import_proposal_lines()
    await run.post_proposals()
    await run.wait_accounting_back()


async def _map_state(ctx: ScenarioContext, slug: str) -> str:
    return str((await ctx.services.bridge.get(f"/maps/{slug}"))["state"])


async def _wait_map_state(
    ctx: ScenarioContext, slug: str, states: set[str], deadline_s: float = 120
) -> str:
    async def reached() -> str | None:
        state = await _map_state(ctx, slug)
        return state if state in states else None

    return await _until(reached, f"map {slug} to reach {sorted(states)}", deadline_s)


class ScenarioFailed(RuntimeError):
    """A scenario's expectation did not hold; the message says which."""


T = TypeVar("T")


async def _until(
    check: Callable[[], Awaitable[T | None]], what: str, deadline_s: float, poll_s: float = 0.25
) -> T:
    """The first truthy value of `check()`, polled until the deadline; else ScenarioFailed."""
    end = time.monotonic() + deadline_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > end:
            raise ScenarioFailed(f"timed out after {deadline_s:.0f} s waiting for {what}")
        await asyncio.sleep(poll_s)


async def _happy_path(ctx: ScenarioContext) -> None:
    plan = plan_demo(seed=11, invoices=6, business_date=BUSINESS_DATE)
    with new_progress() as progress:
        await _run_for(ctx, plan, progress).run()
    ctx.say("6 invoices confirmed, synced, imported, posted; accounting detail back")


async def _finance_down(ctx: ScenarioContext) -> None:
    # Twelve headers: enough receipts time out to cross the default rule (10 in 15 minutes).
    plan = plan_demo(seed=12, invoices=12, business_date=BUSINESS_DATE)
    with new_progress() as progress:
        run = _run_for(ctx, plan, progress)
        await run.setup()
        await run.approve_entries()
        await run.sync_and_post_journals()
        stop_service(ctx.settings, "finance")
        ctx.say("Finance stopped; confirming invoices while it is down")
        await run.invoice()
        await _wait_map_state(ctx, "invoices", {"paused"})
        errors = await ctx.services.bridge.get("/errors", status="open")
        ctx.say(f"receipts time out: {len(errors)} errors; the alert rule paused the maps")
        start_service(ctx.settings, "finance")
        ctx.say("Finance back")
        for slug in ("invoices", "actuals"):
            if await _map_state(ctx, slug) == "paused":
                await ctx.services.bridge.post(f"/maps/{slug}/resume")
                ctx.say(f"map {slug} resumed: catch-up replays its queue in order")
        await _wait_map_state(ctx, "invoices", {"running"})
        await ctx.services.bridge.post("/errors/retry-all")
        await _finish(run)


async def _map_paused(ctx: ScenarioContext) -> None:
    plan = plan_demo(seed=13, invoices=6, business_date=BUSINESS_DATE)
    with new_progress() as progress:
        run = _run_for(ctx, plan, progress)
        await ctx.services.bridge.post("/maps/invoices/pause")
        ctx.say("proposal map paused before any load")
        await run.setup()
        await run.approve_entries()
        await run.sync_and_post_journals()
        await run.invoice()
        count = await _wait_queued(ctx, "invoices", len(plan.contracts))
        report = reconcile(await fetch_snapshot(ctx.services))
        ctx.say(
            f"{count} headers queued; reconciliation meanwhile: "
            f"{len(report.differences)} difference(s), all explained: "
            f"{not report.unexplained}"
        )
        await ctx.services.bridge.post("/maps/invoices/resume")
        await _wait_map_state(ctx, "invoices", {"running"})
        ctx.say("resumed: the queue replayed in order, map back to running")
        await _finish(run)


async def _wait_queued(ctx: ScenarioContext, slug: str, n: int, deadline_s: float = 60) -> int:
    """Wait until the paused map holds `n` records in its queue."""

    async def queued() -> int | None:
        count = int((await ctx.services.bridge.get(f"/maps/{slug}/queue")).get("count", 0))
        return count if count >= n else None

    return await _until(queued, f"{n} queued records on map {slug}", deadline_s)


async def _direct_proposal_refused(ctx: ScenarioContext) -> None:
    plan = plan_demo(seed=14, invoices=2, business_date=BUSINESS_DATE)
    with new_progress() as progress:
        run = _run_for(ctx, plan, progress)
        await run.setup()
        await run.approve_entries()
        await run.sync_and_post_journals()
        await run.invoice()
        await run.import_proposal_lines()
        before = await ctx.services.finance.get("/proposals")
        target = before[0]["proposal_id"]
        for method, path in (("POST", "/proposals"), ("DELETE", f"/proposals/{target}")):
            try:
                await ctx.services.finance.call(method, path, {} if method == "POST" else None)
            except ApiError as exc:
                ctx.say(f"{method} {path} refused with {exc.status}: {exc.detail}")
                if exc.status not in (405, 409):
                    raise
            else:
                raise ScenarioFailed(f"{method} {path} was accepted")
        if await ctx.services.finance.get("/proposals") != before:
            raise ScenarioFailed("refused calls changed the proposals")
        ctx.say("nothing changed in Finance")
        await ctx.services.finance.call(
            "PATCH", f"/proposals/{target}", {"sales_tax_group": "EXEMPT"}
        )
        violations = await _one_way_violations(ctx)
        ctx.say(
            f"sales tax group edited in Finance: it stays there; the bridge refused to "
            f"carry it back ({violations} one-way violation(s) in its activity log)"
        )
        await run.post_proposals()
        await run.wait_accounting_back()


async def _one_way_violations(ctx: ScenarioContext, deadline_s: float = 30) -> int:
    async def logged() -> int:
        activity = await ctx.services.bridge.get("/activity", limit=200)
        return sum(1 for a in activity if "one_way" in str(a.get("kind")))

    return await _until(logged, "the bridge to log a one-way violation", deadline_s)


async def _missing_exchange_rate(ctx: ScenarioContext) -> None:
    plan = DemoPlan(
        15,
        BUSINESS_DATE,
        tuple(
            ContractPlan(
                i,
                "USPM",
                "EUR",
                "Contoso",
                "time_and_material",
                entries=(
                    EntryPlan(
                        "time",
                        Decimal(8),
                        Decimal(8),
                        Decimal(100),
                        Decimal(200),
                        "Ana Silva",
                        "Developer",
                        BUSINESS_DATE,
                    ),
                ),
            )
            for i in range(2)
        ),
    )
    with new_progress() as progress:
        run = _run_for(ctx, plan, progress)
        await run.setup(skip_rates=(("EUR", "USD"),))
        ctx.say("USPM (USD) sells in EUR but has no EUR→USD rate")
        await run.approve_entries()
        await run.sync_and_post_journals()
        rows = await ctx.services.finance.get("/staging", imported=False)
        reasons = sorted({str(r.get("reason")) for r in rows})
        ctx.say(f"{len(rows)} staged rows not imported: {reasons}")
        await ctx.services.finance.post(
            "/legal-entities/USPM/exchange-rates",
            {
                "from_currency": "EUR",
                "to_currency": "USD",
                "valid_from": "2026-01-01",
                "rate": "1.0850",
            },
        )
        ctx.say("rate added; the next import takes the rows")
        await run.sync_and_post_journals()
        await run.invoice()
        await _finish(run)


async def _journal_not_posted(ctx: ScenarioContext) -> None:
    plan = plan_demo(seed=16, invoices=3, business_date=BUSINESS_DATE)
    tm = DemoPlan(plan.seed, plan.business_date, tuple(c for c in plan.contracts if c.entries))
    with new_progress() as progress:
        run = _run_for(ctx, tm, progress)
        await run.setup()
        await run.approve_entries()
        await run.sync_and_post_journals(post=False)
        ctx.say("unbilled sales imported into integration journals, but nobody posts them")
        await run.invoice()
        waiting = await _wait_waiting_reason(ctx, next(iter(run.invoice_ids.values())))
        ctx.say(f"proposal waits: {waiting!r}")
        await run.s.finance.post("/journals/post", {})
        ctx.say("journals posted; the next import makes the proposal lines")
        await _finish(run)


async def _wait_waiting_reason(
    ctx: ScenarioContext, invoice_id: str, deadline_s: float = 120
) -> str:
    async def reason() -> str | None:
        await ctx.services.finance.post("/import", {})
        try:
            proposal = await ctx.services.finance.get(f"/proposals/{invoice_id}")
        except ApiError:
            return None
        return str(proposal["waiting_reason"]) if proposal.get("waiting_reason") else None

    return await _until(reason, f"proposal {invoice_id} to show a waiting reason", deadline_s)


async def _corrective_invoice(ctx: ScenarioContext) -> None:
    plan = plan_demo(seed=17, invoices=3, business_date=BUSINESS_DATE)
    tm = DemoPlan(plan.seed, plan.business_date, tuple(c for c in plan.contracts if c.entries))
    with new_progress() as progress:
        run = _run_for(ctx, tm, progress)
        await run.run()
        original = next(iter(run.invoice_ids.values()))
        corrective = await ctx.services.dataverse.post(
            f"/invoices/{original}/correct", {"invoice_date": str(BUSINESS_DATE)}
        )
        cid = corrective["invoice_id"]
        details = [d for line in corrective["lines"] for d in line["details"]]
        for detail in details:
            billed = Decimal(str(detail.get("original_quantity") or 0))
            await ctx.services.dataverse.call(
                "PATCH",
                f"/invoices/{cid}/details/{detail['detail_id']}",
                {"quantity": str(billed / 2)},
            )
        await ctx.services.dataverse.post(f"/invoices/{cid}/confirm")
        ctx.say(f"invoice {original[:8]} corrected to half its quantity: credit and rebill")
        # From here on the run follows the corrective invoice alone.
        run.invoice_ids = {-1: cid}
        run.confirmed_at[cid] = time.monotonic()
        await _finish(run)


async def _poison_event(ctx: ScenarioContext) -> None:
    topic = topic_name(Topic.INVOICE_CONFIRMED, ctx.settings.topic_prefix)
    producer = make_producer(ctx.settings, "scenario-poison")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{not json at all", key=b"poison")
        await producer.send_and_wait(
            topic,
            b'{"event_id":"6c1d1c4e-7d47-4a1b-9b8e-3f0b0d1e2a3c","event_type":'
            b'"invoice.confirmed","occurred_at":"2026-10-01T00:00:00Z","source":"x",'
            b'"payload":{"invoice_id":"nope"}}',
            key=b"poison",
        )
    finally:
        await producer.stop()
    ctx.say("two poison events sent on invoice-confirmed")
    plan = plan_demo(seed=18, invoices=3, business_date=BUSINESS_DATE)
    with new_progress() as progress:
        await _run_for(ctx, plan, progress).run()
    letters = await _read_topic(ctx.settings, dlq_name(topic), 2)
    for letter in letters:
        ctx.say(f"on {dlq_name(topic)}: {json.loads(letter)['reason'][:100]}")


async def _read_topic(
    settings: Settings, topic: str, n: int, deadline_s: float = 30
) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers(),
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        end = time.monotonic() + deadline_s
        while len(values) < n and time.monotonic() < end:
            batch = await consumer.getmany(timeout_ms=200)
            values += [m.value for ms in batch.values() for m in ms if m.value]
    finally:
        await consumer.stop()
    if len(values) < n:
        raise ScenarioFailed(f"expected {n} dead letters on {topic}, found {len(values)}")
    return values


async def _bridge_killed(ctx: ScenarioContext) -> None:
    plan = plan_demo(seed=19, invoices=8, business_date=BUSINESS_DATE)
    with new_progress() as progress:
        run = _run_for(ctx, plan, progress)
        await run.setup()
        await run.approve_entries()
        await run.sync_and_post_journals()
        await run.invoice(limit=4)
        stop_service(ctx.settings, "bridge", kill=True)
        ctx.say("bridge killed with SIGKILL after 4 confirmations")
        await run.invoice()
        ctx.say("4 more confirmed while the bridge is down")
        started = time.monotonic()
        start_service(ctx.settings, "bridge")
        ctx.say(f"bridge restarted, healthy after {time.monotonic() - started:.1f} s")
        await _finish(run)


async def _broker_restarted_empty(ctx: ScenarioContext) -> None:
    plan = plan_demo(seed=20, invoices=8, business_date=BUSINESS_DATE)
    since = datetime.now(UTC)
    with new_progress() as progress:
        run = _run_for(ctx, plan, progress)
        await run.setup()
        await run.approve_entries()
        await run.sync_and_post_journals()
        await run.invoice(limit=4)
        broker.stop(ctx.settings)
        broker.start(ctx.settings)
        await provision_async(ctx.settings)
        ctx.say("broker restarted empty (memory storage): topics, offsets and events gone")
        await run.invoice()
        for service in (ctx.services.dataverse, ctx.services.finance, ctx.services.bridge):
            replayed = await service.call(
                "POST",
                "/outbox/replay",
                params={"since": since.isoformat()},
                token=ctx.settings.token_administrator,
            )
            ctx.say(f"{service.service}: {replayed['replayed']} events published again")
        await _finish(run)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("happy-path", "The whole flow with nothing broken.", _happy_path),
        Scenario(
            "finance-down",
            "Finance down → receipts time out → the alert pauses the map → Finance back → "
            "resume → catch-up → agree.",
            _finance_down,
            {"receipt_timeout_s": 3.0},
        ),
        Scenario(
            "map-paused",
            "The proposal map paused for the whole load, then resumed: nothing lost, order kept.",
            _map_paused,
        ),
        Scenario(
            "direct-proposal-refused",
            "Creating or deleting a proposal in Finance is refused; header edits stay in Finance.",
            _direct_proposal_refused,
        ),
        Scenario(
            "missing-exchange-rate",
            "A contract currency without an exchange rate: rows "
            "wait with the reason until the rate is added.",
            _missing_exchange_rate,
        ),
        Scenario(
            "journal-not-posted",
            "The integration journal is not posted: the proposal "
            "waits ('project transaction not posted yet') until it is.",
            _journal_not_posted,
        ),
        Scenario(
            "corrective-invoice",
            "A confirmed invoice corrected: credit, rebill and "
            "backlog return reach Finance like any invoice.",
            _corrective_invoice,
        ),
        Scenario(
            "poison-event",
            "Malformed events go to the .dlq with their reason; the flow goes on.",
            _poison_event,
        ),
        Scenario(
            "bridge-killed",
            "The bridge killed mid-stream (SIGKILL) and restarted: nothing lost, nothing twice.",
            _bridge_killed,
        ),
        Scenario(
            "broker-restarted-empty",
            "The broker restarted empty mid-stream: re-drive and outbox replay lose nothing.",
            _broker_restarted_empty,
        ),
    )
}


def run_scenario(
    settings: Settings, scenario: Scenario, console: Console, keep: bool = False
) -> Report:
    """Run a scenario on its own stack and return the closing reconciliation."""
    own = settings.model_copy(
        update={"home": settings.home / "scenarios" / scenario.name, **(scenario.settings or {})}
    )
    console.print(f"[bold]{scenario.name}[/bold]: {scenario.description}")
    with running_stack(own, keep=keep):
        return asyncio.run(_run(own, scenario, console))


async def _run(settings: Settings, scenario: Scenario, console: Console) -> Report:
    services = Services(settings)
    try:
        await scenario.steps(ScenarioContext(settings, services, console))
        return reconcile(await fetch_snapshot(services))
    finally:
        await services.close()
