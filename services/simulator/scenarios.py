"""Named, deterministic scenarios: each replays a pain real users know and ends reconciled.

Each scenario runs on a stack of its own (its own `DWSIM_HOME` under `.dwsim/scenarios/`), so
what one leaves behind never colours another's reconciliation. Faults are injected by the
scenario itself: stopping and starting the processes it owns, sending bad events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date

from rich.console import Console

from services.common.settings import Settings
from services.simulator.clients import Services
from services.simulator.demo import DemoRun, new_progress
from services.simulator.reconcile import Report, reconcile
from services.simulator.seed import plan_demo
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


async def _happy_path(ctx: ScenarioContext) -> None:
    plan = plan_demo(seed=11, invoices=6, business_date=date(2026, 10, 1))
    with new_progress() as progress:
        await DemoRun(ctx.services, plan, progress).run()
    ctx.say("6 invoices confirmed, synced, imported, posted; accounting detail back")


SCENARIOS: dict[str, Scenario] = {
    s.name: s for s in (Scenario("happy-path", "The whole flow with nothing broken.", _happy_path),)
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
