"""A user's own scenario, written from docs/scenarios.md only: the broker hangs (SIGSTOP) while
the project manager confirms invoices; once it continues, every invoice reaches Finance, is
posted, and the two sides agree.

Run it with `dwsim scenario run examples/scenarios/broker_hangs.py`.
"""

from __future__ import annotations

from datetime import date

from services.simulator import faults
from services.simulator.scenario import Scenario, ScenarioContext
from services.simulator.seed import plan_demo

INVOICES = 4


async def setup(ctx: ScenarioContext) -> None:
    run = ctx.flow(plan_demo(seed=42, invoices=INVOICES, business_date=date(2026, 10, 1)))
    await run.setup()
    await run.approve_entries()
    await run.sync_and_post_journals()


async def fault(ctx: ScenarioContext) -> None:
    async with faults.broker_frozen(ctx.settings) as pid:
        ctx.say(f"broker (pid {pid}) stopped with SIGSTOP")
        # Dataverse commits each confirmation with its events; the outbox holds them.
        await ctx.flow_run.invoice()
        confirmed = await ctx.services.dataverse.get("/invoices", status="confirmed")
        ctx.check(
            f"{INVOICES} invoices confirmed while the broker hung",
            len(confirmed) == INVOICES,
            f"{len(confirmed)} confirmed in Dataverse",
        )
    ctx.say("broker continued with SIGCONT")


async def recovery(ctx: ScenarioContext) -> None:
    await ctx.finish()


async def expect(ctx: ScenarioContext) -> None:
    posted = await ctx.services.finance.get("/customer-invoices")
    ctx.check(
        f"all {INVOICES} invoices posted in Finance",
        len(posted) == INVOICES,
        f"{len(posted)} customer invoices",
    )


broker_hangs = Scenario(
    "broker-hangs",
    "The broker hangs (SIGSTOP) while invoices are confirmed; nothing is lost.",
    setup=setup,
    fault=fault,
    recovery=recovery,
    expect=expect,
)
