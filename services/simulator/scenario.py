"""The public scenario API: what a scenario is, how it runs, and how a user's file is loaded.

A scenario is a `Scenario`: a name, what it shows, the settings its stack needs, and up to five
phases, each an async function of a `ScenarioContext`, run in this order:

    setup     the business data (legal entities, contracts, approved entries)
    load      the work that flows (confirmations, postings)
    fault     what breaks (a service stopped, a map paused, the broker restarted empty)
    recovery  what an operator does (start it again, resume, replay)
    expect    the facts that must hold afterwards, as checks

A phase states every fact it finds as a check (`ctx.check`); the runner ends each scenario
with a reconciliation of Dataverse and Finance (its last check). A scenario that is one story
from end to end can be a single function decorated with `@scenario(...)`: it runs as the load
phase.

`dwsim scenario run NAME` runs a built-in scenario (`scenarios.py`, written on this API);
`dwsim scenario run ./my_fault.py` loads every `Scenario` the file defines and runs each the
same way: on a stack of its own (`DWSIM_HOME/scenarios/<name>`), with its settings, its
fault, its checks and the closing reconciliation. See docs/scenarios.md.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from services.common.errors import DwsimError
from services.common.settings import Settings
from services.simulator.clients import ApiError, Services
from services.simulator.deadlines import DeadlinePassed
from services.simulator.demo import DemoFailed, DemoRun, new_progress
from services.simulator.processes import console_login_link
from services.simulator.reconcile import Report, reconcile
from services.simulator.seed import DemoPlan
from services.simulator.snapshot import fetch_snapshot
from services.simulator.stack import running_stack

PHASES = ("setup", "load", "fault", "recovery", "expect")
CLOSING_CHECK = "Dataverse and Finance agree"


class ScenarioFailed(DwsimError):
    """A scenario's expectation did not hold and it cannot go on; the message says which."""


class ScenarioFileError(DwsimError):
    """A scenario file could not be loaded, or defines no scenario."""


@dataclass(frozen=True)
class Check:
    """One fact a scenario states, and whether the sides' records bear it out."""

    name: str
    passed: bool
    detail: str = ""


@dataclass
class ScenarioResult:
    """A scenario's checks, in the order they were made, and its closing reconciliation."""

    name: str
    checks: list[Check] = field(default_factory=list)
    report: Report | None = None

    @property
    def passed(self) -> bool:
        """True when the scenario made its checks and every one held."""
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        """The checks that did not hold."""
        return [c for c in self.checks if not c.passed]

    def to_json(self) -> dict[str, Any]:
        """As a JSON object (`dwsim scenario run --json`)."""
        return {
            "scenario": self.name,
            "passed": self.passed,
            "checks": [asdict(c) for c in self.checks],
            "report": self.report.to_json() if self.report else None,
        }


@dataclass
class ScenarioContext:
    """What a scenario's phases work with: the stack's settings (for `faults`), the three
    services' clients, the console, the checks so far, and what one phase leaves the next
    (`run`, the business flow driver; `state`, anything else)."""

    settings: Settings
    services: Services
    console: Console
    result: ScenarioResult
    progress: Progress
    run: DemoRun | None = None
    state: dict[str, Any] = field(default_factory=dict)

    def say(self, text: str) -> None:
        """Narrate what the scenario does (not a finding: findings are checks)."""
        self.console.print(f"  • {text}")

    def check(self, name: str, passed: bool, detail: str = "") -> bool:
        """State a fact and record whether it holds; a failed check fails the scenario."""
        self.result.checks.append(Check(name, passed, detail))
        mark = "[green]✔[/green]" if passed else "[red]✘[/red]"
        self.console.print(f"  {mark} {name}" + (f" — {detail}" if detail else ""))
        return passed

    def flow(self, plan: DemoPlan, deadline_s: float = 240) -> DemoRun:
        """The driver of a business plan (`seed.plan_demo`) through the services, phase by
        phase (setup, approve_entries, sync_and_post_journals, invoice, …); kept as `run`."""
        self.run = DemoRun(self.services, plan, self.progress, deadline_s=deadline_s)
        return self.run

    @property
    def flow_run(self) -> DemoRun:
        """The driver an earlier phase made with `flow`."""
        if self.run is None:
            raise ScenarioFailed("no business flow: an earlier phase must call ctx.flow(plan)")
        return self.run

    async def finish(self) -> None:
        """From confirmed invoices to accounting detail back in Dataverse: proposal lines,
        posting, accounting detail back."""
        run = self.flow_run
        await run.import_proposal_lines()
        await run.post_proposals()
        await run.wait_accounting_back()

    async def reconcile(self) -> Report:
        """Reconcile the whole stack now (the scenario's stack is its own)."""
        return reconcile(await fetch_snapshot(self.services))


Step = Callable[[ScenarioContext], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    """A named scenario: what it shows, the settings its stack needs, and its phases."""

    name: str
    description: str
    setup: Step | None = None
    load: Step | None = None
    fault: Step | None = None
    recovery: Step | None = None
    expect: Step | None = None
    settings: dict[str, object] | None = None

    def phases(self) -> list[tuple[str, Step]]:
        """The phases it has, in the order they run."""
        return [(p, step) for p in PHASES if (step := getattr(self, p)) is not None]


def scenario(
    name: str, description: str, settings: dict[str, object] | None = None
) -> Callable[[Step], Scenario]:
    """Decorate one async function of a `ScenarioContext` as a whole scenario (its load phase)."""

    def make(story: Step) -> Scenario:
        return Scenario(name, description, load=story, settings=settings)

    return make


def load_file(path: Path) -> list[Scenario]:
    """Every `Scenario` a Python file defines at module level, in definition order."""
    if not path.is_file():
        raise ScenarioFileError(f"no scenario file {path}")
    module_name = f"dwsim_user_scenario_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ScenarioFileError(f"{path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ScenarioFileError(f"{path} failed to load: {exc!r}") from exc
    found = [v for v in vars(module).values() if isinstance(v, Scenario)]
    if not found:
        raise ScenarioFileError(f"{path} defines no Scenario (see docs/scenarios.md)")
    for s in found:
        if not s.phases():
            raise ScenarioFileError(f"scenario {s.name} in {path} has no phase")
    return found


def run_scenario(
    settings: Settings,
    scenario: Scenario,
    console: Console,
    keep: bool = False,
    web_console: bool = False,
) -> ScenarioResult:
    """Run a scenario on its own stack (with the web console on it when `web_console`, so its
    live overview shows the fault as it happens); its result holds every check, the closing
    reconciliation's agreement last."""
    own = settings.model_copy(
        update={"home": settings.home / "scenarios" / scenario.name, **(scenario.settings or {})}
    )
    console.print(f"[bold]{scenario.name}[/bold]: {scenario.description}")
    with running_stack(own, keep=keep, console=web_console):
        if web_console:
            link = console_login_link(own)
            console.print(
                f"Console of this scenario's stack (one-time login link): {link}", soft_wrap=True
            )
        return asyncio.run(_run(own, scenario, console))


async def _run(settings: Settings, scenario: Scenario, console: Console) -> ScenarioResult:
    services = Services(settings)
    result = ScenarioResult(scenario.name)
    try:
        with new_progress() as progress:
            ctx = ScenarioContext(settings, services, console, result, progress)
            for phase, step in scenario.phases():
                try:
                    await step(ctx)
                except (ScenarioFailed, DeadlinePassed, DemoFailed, ApiError) as exc:
                    # A phase that could not go on is a failed check; the rest is not run.
                    ctx.check("scenario ran to its end", False, f"{phase}: {exc}")
                    return result
            report = await ctx.reconcile()
        ctx.check(
            CLOSING_CHECK,
            report.agree,
            f"{len(report.differences)} difference(s); {report.summary()}",
        )
        result.report = report
        return result
    finally:
        await services.close()
