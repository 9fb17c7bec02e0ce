"""The eleven built-in scenarios, written on the public scenario API (`scenario.py`): each
replays a pain real users know and ends reconciled. The fault scenarios are phased (setup,
load, fault, recovery, expect); the others are one story each (`@scenario`).

Each scenario runs on a stack of its own (its own `DWSIM_HOME` under `.dwsim/scenarios/`), so
what one leaves behind never colours another's reconciliation. Faults are injected by the
scenario itself: stopping and starting the processes it owns, sending bad events.

Every fact a scenario states is a check (`ScenarioContext.check`): it reads the sides' own
records and fails the scenario when the fact does not hold. Narration (`say`) is kept for what
the scenario does, never for what it found. The closing reconciliation is the last check.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import pairwise
from typing import Any

from schemas.topics import Topic, dlq_name, topic_name
from services.finance.domain import NOT_POSTED_YET, ONE_WAY_MESSAGE
from services.simulator import faults
from services.simulator.clients import ApiError
from services.simulator.deadlines import DeadlinePassed, until
from services.simulator.processes import split_instance
from services.simulator.reconcile import POSTED
from services.simulator.scenario import (
    Scenario,
    ScenarioContext,
    ScenarioFailed,
    ScenarioResult,
    run_scenario,
    scenario,
)
from services.simulator.seed import ROLES, ContractPlan, DemoPlan, EntryPlan, plan_demo
from services.simulator.topic_reader import read_to_end, read_values

__all__ = ["SCENARIOS", "ScenarioFailed", "ScenarioResult", "replay_order_breaks", "run_scenario"]

BUSINESS_DATE = date(2026, 10, 1)


def replay_order_breaks(
    source_order: Sequence[str], delivered: Mapping[str, tuple[int, int]]
) -> tuple[int, list[str]]:
    """Compare the order records were delivered in with their source commit order.

    The integration keeps order per key, and the broker per partition (DESIGN.md): so every two
    records that share a partition, committed at the source in `source_order`, must stand in
    that order in the partition. `delivered` is each key's (partition, offset) on the topic the
    target reads. Returns how many such pairs were compared, and each pair out of order.
    """
    by_partition: dict[int, list[str]] = defaultdict(list)
    for key in source_order:
        if key in delivered:
            by_partition[delivered[key][0]].append(key)
    pairs, breaks = 0, []
    for partition, keys in sorted(by_partition.items()):
        for earlier, later in pairwise(keys):
            pairs += 1
            if not delivered[earlier][1] < delivered[later][1]:
                breaks.append(
                    f"partition {partition}: {later} (committed after {earlier}) at offset "
                    f"{delivered[later][1]}, {earlier} at {delivered[earlier][1]}"
                )
    return pairs, breaks


async def _check_header_order(ctx: ScenarioContext, invoice_ids: Sequence[str]) -> None:
    """The headers stand on the topic Finance reads, partition by partition, in Dataverse's
    confirmation order.

    Dataverse's `confirmed_at` is the source commit order (the scenario confirms one invoice
    after the other). The topic is read from the broker itself, not from any service's report;
    a header sent more than once counts at its first offset.
    """
    confirmed = {
        str(i["invoice_id"]): datetime.fromisoformat(str(i["confirmed_at"]))
        for i in await ctx.services.dataverse.get("/invoices", status="confirmed")
        if str(i["invoice_id"]) in invoice_ids
    }
    topic = topic_name(Topic.FO_INVOICE_PROPOSALS, ctx.settings.topic_prefix)
    delivered: dict[str, tuple[int, int]] = {}
    for message in await read_to_end(ctx.settings, topic):
        key = message.key.decode() if message.key else ""
        delivered.setdefault(key, (message.partition, message.offset))
    source_order = sorted(confirmed, key=confirmed.__getitem__)
    pairs, breaks = replay_order_breaks(source_order, delivered)
    ctx.check(
        "headers replayed to Finance in Dataverse's commit order, per partition",
        pairs > 0 and not breaks and set(confirmed) <= set(delivered),
        f"{pairs} pairs of headers sharing a partition of {topic} compared; "
        f"{len(set(confirmed) & set(delivered))} of {len(confirmed)} headers on the topic"
        + (f"; out of order: {'; '.join(breaks)}" if breaks else ""),
    )


async def _happy_path(ctx: ScenarioContext) -> None:
    plan = plan_demo(seed=11, invoices=6, business_date=BUSINESS_DATE)
    result = await ctx.flow(plan).run()
    ctx.state["report"] = result.report


async def _happy_path_expect(ctx: ScenarioContext) -> None:
    report = ctx.state["report"]
    posted = report.count(POSTED) if report else 0
    ctx.check(
        "6 invoices confirmed, synced, imported and posted, with their accounting detail back",
        report is not None and report.agree and posted == 6,
        f"{posted} posted customer invoices compared with their proposals",
    )


async def _setup_entries(ctx: ScenarioContext, plan: DemoPlan) -> None:
    """Business data and approved work, synced and journal-posted: ready to invoice."""
    run = ctx.flow(plan)
    await run.setup()
    await run.approve_entries()
    await run.sync_and_post_journals()


async def _finance_down_setup(ctx: ScenarioContext) -> None:
    # Twelve headers: enough receipts time out to cross the default rule (10 in 15 minutes).
    await _setup_entries(ctx, plan_demo(seed=12, invoices=12, business_date=BUSINESS_DATE))


async def _finance_down_fault(ctx: ScenarioContext) -> None:
    faults.stop(ctx.settings, "finance")
    ctx.check("Finance stopped", not faults.running(ctx.settings, "finance"), "process gone")
    ctx.say("confirming invoices while Finance is down")
    await ctx.flow_run.invoice()
    state = await faults.wait_map_state(ctx.services, "invoices", ("paused",))
    errors = await ctx.services.bridge.get("/errors", status="open")
    timeouts = [e for e in errors if e.get("error_type") == "timeout"]
    ctx.check(
        "receipts timed out: at least 10 time-out errors (the default rule's count)",
        len(timeouts) >= 10,
        f"{len(timeouts)} of {len(errors)} open errors are receipt time-outs",
    )
    activity = await ctx.services.bridge.get("/activity", map="invoices", limit=500)
    by_rule = [
        a
        for a in activity
        if a.get("kind") == "state_changed"
        and _detail(a).get("by") == "alert rule"
        and _detail(a).get("to") == "paused"
    ]
    ctx.check(
        "the alert rule paused the proposal map",
        state == "paused" and bool(by_rule),
        f"map {state}; {len(by_rule)} pause(s) by an alert rule in its activity log",
    )


async def _finance_down_recovery(ctx: ScenarioContext) -> None:
    faults.start(ctx.settings, "finance")
    ctx.check("Finance back", faults.running(ctx.settings, "finance"), "healthy again")
    for slug in faults.MAPS:
        if await faults.map_state(ctx.services, slug) == "paused":
            await ctx.services.bridge.post(f"/maps/{slug}/resume")
            ctx.say(f"map {slug} resumed: catch-up replays its queue")
    await faults.wait_map_state(ctx.services, "invoices", ("running",))
    await ctx.services.bridge.post("/errors/retry-all")
    await ctx.finish()


async def _headers_in_commit_order(ctx: ScenarioContext) -> None:
    await _check_header_order(ctx, list(ctx.flow_run.invoice_ids.values()))


async def _map_paused_fault(ctx: ScenarioContext) -> None:
    state = await faults.pause_map(ctx.services, "invoices")
    ctx.check("proposal map paused before any load", state == "paused", f"map {state}")


async def _map_paused_load(ctx: ScenarioContext) -> None:
    # More invoices than partitions: at least two headers share a partition, so the order
    # check below always compares something.
    plan = plan_demo(seed=13, invoices=ctx.settings.partitions + 2, business_date=BUSINESS_DATE)
    await _setup_entries(ctx, plan)
    run = ctx.flow_run
    await run.invoice()
    expected = len(plan.contracts)
    await faults.wait_queued(ctx.services, "invoices", expected)
    count = await faults.queued(ctx.services, "invoices")
    ctx.check(
        f"{expected} headers queued, one per confirmed invoice",
        count == expected,
        f"{count} queued",
    )
    report = await ctx.reconcile()
    queued = {
        d.invoice_id
        for d in report.differences
        if d.kind == "confirmed invoice has no proposal" and "is paused" in d.cause
    }
    ctx.check(
        "meanwhile reconciliation explains every difference: each header queued behind "
        "the paused map",
        not report.unexplained and queued == set(run.invoice_ids.values()),
        f"{len(report.differences)} difference(s), {len(report.unexplained)} unexplained "
        f"{sorted({d.kind for d in report.unexplained})}, {len(queued)} headers queued",
    )


async def _map_paused_recovery(ctx: ScenarioContext) -> None:
    state = await faults.resume_map(ctx.services, "invoices")
    ctx.check("resumed: the map is back to running", state == "running", f"map {state}")
    await ctx.finish()


async def _direct_proposal_refused(ctx: ScenarioContext) -> None:
    plan = plan_demo(seed=14, invoices=2, business_date=BUSINESS_DATE)
    run = ctx.flow(plan)
    await run.setup()
    await run.approve_entries()
    await run.sync_and_post_journals()
    await run.invoice()
    await run.import_proposal_lines()
    before = await ctx.services.finance.get("/proposals")
    target = before[0]["proposal_id"]
    refusals = (
        ("POST", "/proposals", f"cannot create proposal (new) in Finance: {ONE_WAY_MESSAGE}"),
        (
            "DELETE",
            f"/proposals/{target}",
            f"cannot delete proposal {target} in Finance: {ONE_WAY_MESSAGE}",
        ),
    )
    for method, path, expected in refusals:
        try:
            await ctx.services.finance.call(method, path, {} if method == "POST" else None)
        except ApiError as exc:
            ctx.check(
                f"{method} {path} refused with 405: {expected}",
                exc.status == 405 and exc.detail == expected,
                f"answered {exc.status}: {exc.detail}",
            )
        else:
            ctx.check(f"{method} {path} refused with 405: {expected}", False, "accepted")
    after = await ctx.services.finance.get("/proposals")
    ctx.check("nothing changed in Finance", after == before, f"{len(after)} proposals")
    invoice_before = await ctx.services.dataverse.get(f"/invoices/{target}")
    await ctx.services.finance.call("PATCH", f"/proposals/{target}", {"sales_tax_group": "EXEMPT"})
    violations = await _one_way_violations(ctx, target)
    edited = await ctx.services.finance.get(f"/proposals/{target}")
    ctx.check(
        "sales tax group edited in Finance stays in Finance",
        edited.get("sales_tax_group") == "EXEMPT",
        f"Finance's proposal has sales tax group {edited.get('sales_tax_group')}",
    )
    invoice_after = await ctx.services.dataverse.get(f"/invoices/{target}")
    ctx.check(
        "the bridge refused to carry the edit back: a one-way violation logged, Dataverse's "
        "invoice unchanged",
        violations >= 1 and invoice_after == invoice_before,
        f"{violations} one-way violation(s) for {target} in the bridge's activity log",
    )
    await run.post_proposals()
    await run.wait_accounting_back()


async def _one_way_violations(ctx: ScenarioContext, invoice_id: str, deadline_s: float = 30) -> int:
    async def logged() -> int:
        activity = await ctx.services.bridge.get("/activity", kind="one_way_violation", limit=200)
        return sum(1 for a in activity if a.get("invoice_id") == invoice_id)

    return await until(
        logged, f"the bridge to log a one-way violation for {invoice_id}", deadline_s
    )


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
    run = ctx.flow(plan)
    await run.setup(skip_rates=(("EUR", "USD"),))
    entity = await ctx.services.finance.get("/legal-entities/USPM")
    rates = {(r["from_currency"], r["to_currency"]) for r in entity.get("exchange_rates", [])}
    ctx.check(
        "USPM (USD) sells in EUR but has no EUR→USD rate",
        entity.get("accounting_currency") == "USD" and ("EUR", "USD") not in rates,
        f"rates: {sorted(rates)}",
    )
    await run.approve_entries()
    await run.sync_and_post_journals()
    rows = await ctx.services.finance.get("/staging", imported=False)
    # Finance's exact reason, on each row's own accounting date.
    wrong = [
        f"{r['actual_id']}: {r.get('reason')!r}"
        for r in rows
        if r.get("reason") != f"no exchange rate for EUR→USD on {r['accounting_date']}"
    ]
    ctx.check(
        "every synced actual waits in staging with the reason "
        "'no exchange rate for EUR→USD on <its accounting date>'",
        len(rows) == run.synced_actuals and not wrong,
        f"{len(rows)} of {run.synced_actuals} rows not imported: "
        f"{sorted({str(r.get('reason')) for r in rows})}"
        + (f"; other reasons: {wrong}" if wrong else ""),
    )
    await ctx.services.finance.post(
        "/legal-entities/USPM/exchange-rates",
        {
            "from_currency": "EUR",
            "to_currency": "USD",
            "valid_from": "2026-01-01",
            "rate": "1.0850",
        },
    )
    ctx.say("EUR→USD rate added")
    await run.sync_and_post_journals()
    left = await ctx.services.finance.get("/staging", imported=False)
    ctx.check(
        "the next import takes the rows",
        not left,
        f"{len(rows) - len(left)} of {len(rows)} imported",
    )
    await run.invoice()
    await ctx.finish()


async def _journal_not_posted(ctx: ScenarioContext) -> None:
    plan = plan_demo(seed=16, invoices=3, business_date=BUSINESS_DATE)
    tm = DemoPlan(plan.seed, plan.business_date, tuple(c for c in plan.contracts if c.entries))
    run = ctx.flow(tm)
    await run.setup()
    await run.approve_entries()
    await run.sync_and_post_journals(post=False)
    drafts = await ctx.services.finance.get("/journals", status="draft")
    posted = await ctx.services.finance.get("/journals", status="posted")
    ctx.check(
        "unbilled sales imported into integration journals, but none posted",
        bool(drafts) and not posted,
        f"{len(drafts)} draft journal(s), {len(posted)} posted",
    )
    await run.invoice()
    reasons = {
        iid: await _wait_waiting_reason(ctx, iid, NOT_POSTED_YET)
        for iid in run.invoice_ids.values()
    }
    ctx.check(
        f"each proposal waits: '{NOT_POSTED_YET}'",
        all(r.startswith(NOT_POSTED_YET) for r in reasons.values()),
        f"{len(reasons)} proposals; first: {next(iter(reasons.values()))!r}",
    )
    await run.s.finance.post("/journals/post", {})
    drafts = await ctx.services.finance.get("/journals", status="draft")
    ctx.check("journals posted", not drafts, f"{len(drafts)} draft journal(s) left")
    await ctx.finish()
    lines = [
        len((await ctx.services.finance.get(f"/proposals/{iid}")).get("lines") or [])
        for iid in run.invoice_ids.values()
    ]
    ctx.check(
        "the next import made the proposal lines",
        all(lines),
        f"lines per proposal: {lines}",
    )


async def _wait_waiting_reason(
    ctx: ScenarioContext, invoice_id: str, expected: str, deadline_s: float = 120
) -> str:
    """The proposal's waiting reason once it starts with `expected` (an earlier, passing
    reason such as "waiting for 1 of 2 billed sales actuals" is waited out)."""
    seen: list[str] = []

    async def reason() -> str | None:
        await ctx.services.finance.post("/import", {})
        try:
            proposal = await ctx.services.finance.get(f"/proposals/{invoice_id}")
        except ApiError:
            return None
        current = str(proposal.get("waiting_reason") or "")
        seen.append(current)
        return current if current.startswith(expected) else None

    try:
        return await until(reason, f"proposal {invoice_id} to wait: {expected}", deadline_s)
    except DeadlinePassed as exc:
        raise ScenarioFailed(f"{exc}; last waiting reason: {seen[-1] if seen else None!r}") from exc


async def _corrective_invoice(ctx: ScenarioContext) -> None:
    plan = plan_demo(seed=17, invoices=3, business_date=BUSINESS_DATE)
    tm = DemoPlan(plan.seed, plan.business_date, tuple(c for c in plan.contracts if c.entries))
    run = ctx.flow(tm)
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
    ctx.say(f"invoice {original[:8]} corrected to half its quantity and confirmed")
    # From here on the run follows the corrective invoice alone.
    run.invoice_ids = {-1: cid}
    run.confirmed_at[cid] = time.monotonic()
    await ctx.finish()
    posted = {
        str(c["proposal_id"]): Decimal(str(c["net_amount"]))
        for c in await ctx.services.finance.get("/customer-invoices")
    }
    first, credit = posted.get(original), posted.get(cid)
    ctx.check(
        "credit and rebill reached Finance: the corrective invoice posted at minus half "
        "the original's net",
        first is not None and credit is not None and credit == -first / 2,
        f"original net {first}, corrective net {credit}",
    )


LARGE_INVOICE_LINES = 1_500
PLATFORM_REASON = (
    "platform limit: transaction of 1,501 records > 1,000 records per dual-write transaction"
)


def _large_invoice_plan() -> DemoPlan:
    """One time-and-material contract with 1,500 one-hour entries: one invoice of 1,500 lines."""
    cost, bill = ROLES["Developer"]
    entries = tuple(
        EntryPlan(
            "time",
            Decimal(1),
            Decimal(1),
            cost,
            bill,
            f"Resource {i % 30:02d}",
            "Developer",
            BUSINESS_DATE.replace(day=1 + i % 28),
        )
        for i in range(LARGE_INVOICE_LINES)
    )
    contract = ContractPlan(0, "USPM", "USD", "Contoso", "time_and_material", entries=entries)
    return DemoPlan(seed=26, business_date=BUSINESS_DATE, contracts=(contract,))


async def _platform_limits(ctx: ScenarioContext) -> None:
    run = ctx.flow(_large_invoice_plan(), deadline_s=300)
    await run.setup()
    await run.approve_entries()
    await run.sync_and_post_journals()
    ctx.say("confirming one invoice of 1,500 lines with Microsoft's limits applied")
    await run.invoice()
    [invoice_id] = run.invoice_ids.values()

    async def failed() -> list[dict[str, Any]] | None:
        errors = await ctx.services.bridge.get("/errors", status="open")
        mine = [e for e in errors if e.get("invoice_id") == invoice_id]
        return mine if len(mine) == 1 + LARGE_INVOICE_LINES else None

    errors = await until(failed, "the invoice's records in the error queue", 120)
    ctx.check(
        f"the 1,500-line invoice fails whole: header and 1,500 lines in the error queue as "
        f"platform-limit errors with the reason '{PLATFORM_REASON}'",
        all(
            e["error_type"] == "platform_limit" and e["reason"].startswith(PLATFORM_REASON)
            for e in errors
        ),
        f"{len(errors)} errors of types {sorted({e['error_type'] for e in errors})}",
    )
    logged = await ctx.services.bridge.get("/activity", map="invoices", kind="platform_limit")
    ctx.check(
        "the activity log says the transaction failed by the platform's limits",
        any(a.get("invoice_id") == invoice_id and PLATFORM_REASON in a["message"] for a in logged),
        f"{len(logged)} platform_limit entries",
    )
    try:
        await ctx.services.finance.get(f"/proposals/{invoice_id}")
        reached = True
    except ApiError as exc:
        reached = exc.status != 404
    staged = await ctx.services.finance.get("/staging", invoice_id=invoice_id)
    ctx.check(
        "nothing of it reached Finance: no proposal, no staged billed line",
        not reached and not staged,
        f"proposal {'found' if reached else 'absent'}, {len(staged)} staged rows",
    )
    ctx.say("switching the bridge to the asynchronous mode (platform limits off), then retry")
    faults.stop(ctx.settings, "bridge")
    faults.start(ctx.settings.model_copy(update={"platform_limits": "none"}), "bridge")
    for table_map in ("invoices", "actuals"):
        await ctx.services.bridge.call("POST", "/errors/retry-all", params={"map": table_map})
    await ctx.finish()
    left = [
        e
        for e in await ctx.services.bridge.get("/errors", status="open")
        if e.get("invoice_id") == invoice_id
    ]
    ctx.check(
        "retried without the limits, the invoice reaches Finance whole and is posted",
        not left,
        f"{len(left)} open errors of the invoice",
    )


async def _poison_event(ctx: ScenarioContext) -> None:
    topic = topic_name(Topic.INVOICE_CONFIRMED, ctx.settings.topic_prefix)
    poison = (
        b"{not json at all",
        b'{"event_id":"6c1d1c4e-7d47-4a1b-9b8e-3f0b0d1e2a3c","event_type":'
        b'"invoice.confirmed","occurred_at":"2026-10-01T00:00:00Z","source":"x",'
        b'"payload":{"invoice_id":"nope"}}',
    )
    await faults.send_raw(ctx.settings, topic, poison, key=b"poison")
    ctx.say("two poison events sent on invoice-confirmed")
    plan = plan_demo(seed=18, invoices=3, business_date=BUSINESS_DATE)
    await ctx.flow(plan).run()
    letters = [json.loads(v) for v in await read_values(ctx.settings, dlq_name(topic), 2)]
    for value in poison:
        kept = [x for x in letters if x.get("value") == value.decode()]
        reason = str(kept[0].get("reason") or "") if kept else ""
        ctx.check(
            f"poison event {value[:24]!r}… on {dlq_name(topic)} with its reason",
            len(kept) == 1 and bool(reason),
            reason[:100],
        )


async def _half_invoiced(ctx: ScenarioContext, seed: int) -> None:
    """Eight contracts ready to invoice, four of them confirmed."""
    await _setup_entries(ctx, plan_demo(seed=seed, invoices=8, business_date=BUSINESS_DATE))
    await ctx.flow_run.invoice(limit=4)


async def _bridge_killed_fault(ctx: ScenarioContext) -> None:
    run = ctx.flow_run
    killed = faults.kill(ctx.settings, "bridge")
    ctx.check(
        "bridge killed with SIGKILL after 4 confirmations",
        killed and not faults.running(ctx.settings, "bridge") and len(run.invoice_ids) == 4,
        f"{len(run.invoice_ids)} confirmed before the kill",
    )
    await run.invoice()
    confirmed = await ctx.services.dataverse.get("/invoices", status="confirmed")
    ctx.check(
        "4 more confirmed while the bridge is down",
        len(confirmed) == 8 and not faults.running(ctx.settings, "bridge"),
        f"{len(confirmed)} confirmed in Dataverse",
    )


async def _bridge_killed_recovery(ctx: ScenarioContext) -> None:
    started = time.monotonic()
    faults.start(ctx.settings, "bridge")
    maps = await ctx.services.bridge.get("/maps")
    ctx.check(
        "bridge restarted and answering",
        bool(maps),
        f"healthy after {time.monotonic() - started:.1f} s",
    )
    await ctx.finish()


async def _broker_empty_fault(ctx: ScenarioContext) -> None:
    await faults.restart_broker_empty(ctx.settings)
    held = len(
        await read_to_end(
            ctx.settings, topic_name(Topic.INVOICE_CONFIRMED, ctx.settings.topic_prefix)
        )
    )
    ctx.check(
        "broker restarted empty (memory storage): the events are gone",
        held == 0,
        f"{held} events on invoice-confirmed after the restart",
    )
    await ctx.flow_run.invoice()


async def _broker_empty_recovery(ctx: ScenarioContext) -> None:
    since = ctx.state["since"]
    # Consumers mid-stream still hold positions of the old log; events published again on the
    # new one could land below them and be skipped. The operator rewinds them first.
    # Each instance rewinds its own share of the partitions: a service's share is their sum.
    by_service: dict[str, list[str]] = {}
    for instance, partitions in (await faults.rewind_consumers(ctx.services)).items():
        by_service.setdefault(split_instance(instance)[0], []).extend(partitions)
    for service, partitions in by_service.items():
        ctx.check(
            f"{service}'s consumer reads the new log from its beginning",
            bool(partitions),
            f"{len(partitions)} partitions rewound",
        )
    for service, replayed in (await faults.replay_outboxes(ctx.services, since)).items():
        ctx.check(
            f"{service} published its events again",
            replayed > 0,
            f"{replayed} events",
        )
    await ctx.finish()


def _detail(activity: Mapping[str, Any]) -> dict[str, Any]:
    """An activity entry's detail (JSON text or already decoded)."""
    detail = activity.get("detail") or {}
    return dict(json.loads(detail) if isinstance(detail, str) else detail)


async def _broker_empty_setup(ctx: ScenarioContext) -> None:
    # The operator's replay covers everything published since the scenario began.
    ctx.state["since"] = datetime.now(UTC)
    await _half_invoiced(ctx, seed=20)


async def _bridge_killed_setup(ctx: ScenarioContext) -> None:
    await _half_invoiced(ctx, seed=19)


BUILT_IN: tuple[Scenario, ...] = (
    Scenario(
        "happy-path",
        "The whole flow with nothing broken.",
        load=_happy_path,
        expect=_happy_path_expect,
    ),
    Scenario(
        "finance-down",
        "Finance down → receipts time out → the alert pauses the map → Finance back → "
        "resume → catch-up → agree.",
        setup=_finance_down_setup,
        fault=_finance_down_fault,
        recovery=_finance_down_recovery,
        expect=_headers_in_commit_order,
        settings={"receipt_timeout_s": 3.0},
    ),
    Scenario(
        "map-paused",
        "The proposal map paused for the whole load, then resumed: nothing lost, order kept.",
        # The pause comes first: the whole load runs into the paused map.
        setup=_map_paused_fault,
        load=_map_paused_load,
        recovery=_map_paused_recovery,
        expect=_headers_in_commit_order,
    ),
    scenario(
        "direct-proposal-refused",
        "Creating or deleting a proposal in Finance is refused; header edits stay in Finance.",
    )(_direct_proposal_refused),
    scenario(
        "missing-exchange-rate",
        "A contract currency without an exchange rate: rows "
        "wait with the reason until the rate is added.",
    )(_missing_exchange_rate),
    scenario(
        "journal-not-posted",
        "The integration journal is not posted: the proposal "
        "waits ('project transaction not posted yet') until it is.",
    )(_journal_not_posted),
    scenario(
        "corrective-invoice",
        "A confirmed invoice corrected: credit, rebill and "
        "backlog return reach Finance like any invoice.",
    )(_corrective_invoice),
    scenario(
        "platform-limits",
        "Microsoft's limits on: a 1,500-line invoice fails whole with the platform's reason; "
        "retried without them, it reaches Finance.",
        settings={"platform_limits": "microsoft"},
    )(_platform_limits),
    scenario(
        "poison-event",
        "Malformed events go to the .dlq with their reason; the flow goes on.",
    )(_poison_event),
    Scenario(
        "bridge-killed",
        "The bridge killed mid-stream (SIGKILL) and restarted: nothing lost, nothing twice.",
        setup=_bridge_killed_setup,
        fault=_bridge_killed_fault,
        recovery=_bridge_killed_recovery,
    ),
    Scenario(
        "broker-restarted-empty",
        "The broker restarted empty mid-stream: re-drive and outbox replay lose nothing.",
        setup=_broker_empty_setup,
        fault=_broker_empty_fault,
        recovery=_broker_empty_recovery,
    ),
)
SCENARIOS: dict[str, Scenario] = {s.name: s for s in BUILT_IN}
