"""`dwsim`: run, break and inspect the Project Operations invoice integration locally."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from infra import broker, postgres, tokens
from infra.errors import InfraError
from services.common.settings import SERVICES, InfrastructureNotStarted, Settings
from services.simulator.cli_twins import register as register_twins
from services.simulator.clients import ApiError, Services
from services.simulator.processes import (
    CONSOLE,
    ServiceStartFailed,
    console_login_link,
    live_instances,
    service_status,
)
from services.simulator.report import print_figures, print_report
from services.simulator.stack import (
    bring_up,
    forget,
    known_instances,
    recall,
    remember,
    running_stack,
    start_afresh,
    take_down,
)

app = typer.Typer(
    help=(
        "dwsim simulates the Dynamics 365 Project Operations invoice integration: Dataverse "
        "(project side), Finance (ERP side) and the dual-write bridge run as separate services "
        "that talk over Kafka, each with its own PostgreSQL database.\n\n"
        "Start here:\n\n"
        "  dwsim demo                 the whole flow end to end, with a reconciliation report\n\n"
        "  dwsim up / status / down   run the stack and look at it\n\n"
        "  dwsim reconcile            what differs between Dataverse and Finance, and why\n\n"
        "  dwsim scenario list        faults to replay: Finance down, map paused, bad records…"
    ),
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode=None,
)
map_app = typer.Typer(help="Run, pause, resume or stop a table map.", no_args_is_help=True)
scenario_app = typer.Typer(
    help="Named fault scenarios that end with reconciliation.", no_args_is_help=True
)
app.add_typer(map_app, name="map")
app.add_typer(scenario_app, name="scenario")
console = Console()
# Errors go to stderr, so that `dwsim maps --json | jq` never reads an error line as data.
_err = Console(stderr=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    _err.print(f"[red]error:[/red] {message}", soft_wrap=True, highlight=False)
    return typer.Exit(code)


async def _with_services(settings: Settings, work: Any) -> Any:
    services = Services(settings)
    try:
        return await work(services)
    finally:
        await services.close()


def _run(settings: Settings, work: Any) -> Any:
    try:
        return asyncio.run(_with_services(settings, work))
    except (ServiceStartFailed, InfrastructureNotStarted) as exc:
        raise _fail(str(exc)) from exc
    except ApiError as exc:
        raise _fail(str(exc)) from exc


def _version(show: bool) -> None:
    if show:
        from importlib.metadata import version

        typer.echo(f"dwsim {version('dwsim')}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """dwsim: run, break and inspect the Project Operations invoice integration locally."""


@app.command()
def up(
    instances: str | None = typer.Option(
        None,
        "--instances",
        help="Processes of each service against the same database and topics, as "
        "`bridge=2,finance=2,dataverse=2` (default: DWSIM_INSTANCES, else one each).",
    ),
) -> None:
    """Start the broker, PostgreSQL and the three services; print where their APIs are (and
    the roles' bearer tokens, the first time they are generated for this home)."""
    try:
        settings = Settings() if instances is None else Settings(instances=instances)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    # Shown before the start, which may fail: the tokens are kept either way, and shown once.
    for line in tokens.describe_new_tokens(settings, tokens.ensure_tokens(settings)):
        console.print(line, soft_wrap=True, highlight=False)
    try:
        started, statuses = bring_up(settings, console=True)
    except (InfraError, ServiceStartFailed) as exc:
        raise _fail(str(exc)) from exc
    remember(settings, started)
    table = Table("service", "API", "OpenAPI page", "pid")
    for s in statuses:
        table.add_row(s.name, s.url or "-", (s.name != CONSOLE and s.openapi) or "-", str(s.pid))
    console.print(table)
    link = console_login_link(settings)
    if link:
        console.print(f"Console (one-time login link, as administrator): {link}", soft_wrap=True)
    console.print(f"Bearer tokens of the roles: {tokens.tokens_path(settings)}")
    console.print("Stop everything with `dwsim down`.")


@app.command()
def down() -> None:
    """Stop what `dwsim up` started (services, and the broker and PostgreSQL if it started
    them) and nothing else."""
    settings = Settings()
    started = recall(settings)
    take_down(settings, started)
    forget(settings)
    parts = [
        *started.services,
        *(["postgres"] if started.postgres else []),
        *(["broker"] if started.broker else []),
    ]
    console.print("stopped: " + (", ".join(parts) if parts else "nothing dwsim up had started"))


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Infrastructure, services, table maps, queued records and errors."""
    settings = Settings()
    b, p = broker.status(settings), postgres.status(settings)
    data: dict[str, Any] = {
        "broker": {"running": b.running, "address": b.bootstrap, "external": b.external},
        "postgres": {"running": p.running, "address": p.url, "external": p.external},
        "services": {},
        "maps": [],
    }
    for name in (*known_instances(settings), CONSOLE):
        s = service_status(settings, name)
        data["services"][name] = {"running": s.running, "url": s.url, "pid": s.pid}
    data["console_login"] = console_login_link(settings)
    if live_instances(settings, "bridge"):
        data["maps"] = _run(settings, _maps_with_counts)
    # What `dwsim up` starts is expected to run, as `python -m infra status` expects the broker
    # and PostgreSQL: a script can trust the exit code.
    down = [
        name
        for name, running in (
            ("broker", b.running),
            ("postgres", p.running),
            *((name, s["running"]) for name, s in data["services"].items()),
        )
        if not running
    ]
    if as_json:
        typer.echo(json.dumps(data, default=str))
    else:
        table = Table("part", "state", "where")
        table.add_row("broker", "up" if b.running else "down", b.bootstrap or "-")
        table.add_row("postgres", "up" if p.running else "down", p.url or "-")
        for name, s in data["services"].items():
            table.add_row(name, "up" if s["running"] else "down", s["url"] or "-")
        console.print(table)
        if data["console_login"]:
            console.print(f"Console login link: {data['console_login']}", soft_wrap=True)
        if data["maps"]:
            _print_maps(data["maps"])
    if down:
        _err.print(f"down: {', '.join(down)} (`dwsim up` starts them)", soft_wrap=True)
        raise typer.Exit(3)


async def _maps_with_counts(services: Services) -> list[dict[str, Any]]:
    listed = await services.bridge.get("/maps")
    stats = await services.bridge.get("/stats")
    errors = await services.bridge.get("/errors", status="open")
    return [
        {
            "name": m["name"],
            "slug": m.get("slug"),
            "state": m["state"],
            "queued": m.get("queue", {}).get("count", 0),
            **stats.get(m["name"], {}),
            "open_errors": sum(1 for e in errors if e.get("map_name") == m["name"]),
        }
        for m in listed
    ]


def _print_maps(maps: list[dict[str, Any]]) -> None:
    table = Table(
        "map",
        "state",
        "queued",
        "pending",
        "synced",
        "failed",
        "filtered",
        "open errors",
        "one-way refused",
    )
    for m in maps:
        table.add_row(
            *(
                str(m.get(k, 0))
                for k in (
                    "name",
                    "state",
                    "queued",
                    "pending",
                    "synced",
                    "failed",
                    "filtered",
                    "open_errors",
                    "one_way_violations",
                )
            )
        )
    console.print(table)


@app.command()
def demo(
    seed: int = typer.Option(7, help="Seed of the generated data: same seed, same data."),
    invoices: int = typer.Option(24, min=1, help="Confirmed invoices to drive through."),
    keep: bool = typer.Option(False, help="Leave the stack running afterwards."),
    as_json: bool = typer.Option(False, "--json", help="Print figures and report as JSON."),
) -> None:
    """The main job: the whole flow end to end, then a reconciliation report and figures.

    Starts whatever is not running (broker, PostgreSQL, services) and stops it again after.
    Exit code 0 only if Dataverse and Finance agree.
    """
    from services.simulator.demo import DemoFailed, DemoRun, new_progress
    from services.simulator.seed import plan_demo

    settings = Settings()
    plan = plan_demo(seed, invoices, date(2026, 10, 1))
    try:
        with running_stack(settings, keep=keep):

            async def work(services: Services) -> Any:
                with new_progress() as progress:
                    return await DemoRun(services, plan, progress).run()

            result = _run(settings, work)
    except (InfraError, ServiceStartFailed, DemoFailed) as exc:
        raise _fail(str(exc)) from exc
    assert result.report is not None
    if as_json:
        typer.echo(
            json.dumps(
                {"figures": result.figures(), "report": result.report.to_json()}, default=str
            )
        )
    else:
        print_report(console, result.report)
        print_figures(console, result.figures())
    if not result.report.agree:
        raise typer.Exit(1)


@app.command()
def reconcile(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (--format json)."),
    fmt: str = typer.Option(
        "table",
        "--format",
        help="table, json, junit (one test case per invoice, for CI), csv or html.",
    ),
    strict: bool = typer.Option(False, help="Fail on any difference, explained or not."),
) -> None:
    """Compare Dataverse and Finance through their APIs and explain every difference.

    Exit code 0 when every difference has a known cause (or there is none), 2 when one is
    unexplained; with --strict, 1 on any difference.
    """
    from services.simulator.reconcile import reconcile as compare
    from services.simulator.report import REPORT_FORMATS, render_report
    from services.simulator.snapshot import fetch_snapshot

    fmt = "json" if as_json else fmt
    if fmt not in REPORT_FORMATS:
        raise _fail(f"unknown format {fmt!r}: one of {', '.join(REPORT_FORMATS)}")
    settings = Settings()

    async def work(services: Services) -> Any:
        return compare(await fetch_snapshot(services))

    report = _run(settings, work)
    if fmt == "table":
        print_report(console, report)
    else:
        typer.echo(render_report(report, fmt), nl=False)
    if report.unexplained:
        raise typer.Exit(2)
    if strict and not report.agree:
        raise typer.Exit(1)


@app.command("maps")
def list_maps(as_json: bool = typer.Option(False, "--json")) -> None:
    """The bridge's table maps: state, queued records, sync counts, open errors."""
    maps = _run(Settings(), _maps_with_counts)
    if as_json:
        typer.echo(json.dumps(maps, default=str))
    else:
        _print_maps(maps)


def _map_action(action: str, name: str) -> None:
    async def work(services: Services) -> Any:
        return await services.bridge.post(f"/maps/{name}/{action}")

    result = _run(Settings(), work)
    console.print(f"map {name}: {action} → {result.get('state', result)}")


@map_app.command("pause")
def map_pause(name: str = typer.Argument(..., help="'invoices', 'actuals' or a full name")) -> None:
    """Pause a running map: records queue, in order, until it resumes."""
    _map_action("pause", name)


@map_app.command("resume")
def map_resume(
    name: str = typer.Argument(..., help="'invoices', 'actuals' or a full name"),
) -> None:
    """Resume a paused map: the queue is replayed in order, then it runs live."""
    _map_action("resume", name)


@map_app.command("stop")
def map_stop(name: str = typer.Argument(..., help="'invoices', 'actuals' or a full name")) -> None:
    """Stop a running map: nothing syncs until it is run again."""
    _map_action("stop", name)


@map_app.command("run")
def map_run(name: str = typer.Argument(..., help="'invoices', 'actuals' or a full name")) -> None:
    """Run a stopped map."""
    _map_action("run", name)


_LEGAL_ENTITIES = typer.Option(
    None, "--legal-entity", "-e", help="Copy only this legal entity's rows (repeatable)."
)


@map_app.command("initial-sync")
def map_initial_sync(
    name: str = typer.Argument(..., help="'invoices', 'actuals' or a full name"),
    legal_entity: list[str] | None = _LEGAL_ENTITIES,
    timeout: float = typer.Option(300.0, help="Seconds to wait for the run to finish."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Start (stopped map) or re-run (running map) the map's initial sync: Dataverse's
    existing rows are copied to Finance. Prints the run's progress and counts; exit code 1
    when rows failed (see `dwsim errors`), 3 when the run did not finish in time."""
    from services.simulator.deadlines import DeadlinePassed
    from services.simulator.initial_sync import (
        follow_initial_sync,
        progress_line,
        start_initial_sync,
    )

    def show(run: dict[str, Any]) -> None:
        if not as_json:
            console.print(f"initial sync {run['run_id']}: {progress_line(run)}", highlight=False)

    async def work(services: Services) -> Any:
        run = await start_initial_sync(services, name, legal_entity or ())
        show(run)
        return await follow_initial_sync(services, name, run["run_id"], timeout, show)

    try:
        run = _run(Settings(), work)
    except DeadlinePassed as exc:
        raise _fail(str(exc), 3) from exc
    if as_json:
        typer.echo(json.dumps(run, default=str))
    if run["rows_failed"]:
        raise _fail(
            f"initial sync {run['run_id']} of map {name}: {run['rows_failed']} rows failed; "
            "fix the cause (dwsim errors) and run it again"
        )


@app.command()
def errors(
    retry: str | None = typer.Option(None, "--retry", help="Retry the error with this id."),
    retry_all: bool = typer.Option(False, "--retry-all", help="Retry every error."),
    status: str | None = typer.Option(
        None, help="Only errors in this status: open, retried, resolved."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The bridge's error queue with each error's status: list, retry one, or retry all."""

    async def work(services: Services) -> Any:
        if retry:
            return await services.bridge.post(f"/errors/{retry}/retry")
        if retry_all:
            return await services.bridge.post("/errors/retry-all")
        return await services.bridge.get("/errors", status=status)

    result = _run(Settings(), work)
    if as_json or retry or retry_all:
        typer.echo(json.dumps(result, default=str, indent=None if as_json else 2))
        return
    table = Table("id", "map", "status", "type", "record", "invoice", "reason", "at")
    for e in result:
        table.add_row(
            str(e.get("error_id", e.get("id"))),
            str(e.get("map_name")),
            str(e.get("status")),
            str(e.get("error_type")),
            str(e.get("record_key")),
            str(e.get("invoice_id") or ""),
            str(e.get("reason")),
            str(e.get("created_at")),
        )
    console.print(table)


@app.command()
def trace(
    invoice_id: str = typer.Argument(..., help="The invoice's id, or a prefix that names one"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """An invoice's journey across Dataverse, the bridge and Finance."""
    from services.simulator.trace import collect_trace, print_trace, resolve_invoice_id

    async def work(services: Services) -> Any:
        known = [str(i["invoice_id"]) for i in await services.dataverse.get("/invoices")]
        return await collect_trace(services, resolve_invoice_id(known, invoice_id))

    try:
        journey = _run(Settings(), work)
    except LookupError as exc:
        raise _fail(str(exc).strip("'\"")) from exc
    if as_json:
        typer.echo(json.dumps(journey, default=str))
    else:
        print_trace(console, journey)


@scenario_app.command("list")
def scenario_list() -> None:
    """The scenarios, each a pain real users know, ending with reconciliation."""
    from services.simulator.scenarios import SCENARIOS

    table = Table("name", "what it shows")
    for s in SCENARIOS.values():
        table.add_row(s.name, s.description)
    console.print(table)


@scenario_app.command("run")
def scenario_run(
    name: str = typer.Argument(
        ..., help="A built-in scenario's name, or a Python file of your own scenarios."
    ),
    keep: bool = typer.Option(False, help="Leave the stack running afterwards."),
    as_json: bool = typer.Option(
        False, "--json", help="Print each check (name, passed, detail) and the report as JSON."
    ),
    web_console: bool = typer.Option(
        False,
        "--console",
        help="Start the web console on the scenario's stack and print its login link: its "
        "live overview shows the fault as it happens (receipts timing out, the map pausing).",
    ),
) -> None:
    """Run one scenario, or every scenario a file defines (docs/scenarios.md); exit 0 only if
    every check they state holds, the closing reconciliation's agreement included."""

    from services.simulator.scenario import ScenarioFileError, load_file, run_scenario
    from services.simulator.scenarios import SCENARIOS

    if name.endswith(".py") or Path(name).is_file():
        try:
            chosen = load_file(Path(name))
        except ScenarioFileError as exc:
            raise _fail(str(exc)) from exc
    elif name in SCENARIOS:
        chosen = [SCENARIOS[name]]
    else:
        raise _fail(f"no scenario {name!r}; see `dwsim scenario list`, or give a .py file")
    settings = Settings()
    # Narration and checks go to stderr with --json, so that stdout is the result alone.
    err = Console(stderr=True)
    out = err if as_json else console
    failed = []
    for scenario in chosen:
        logs = f"{settings.home}/scenarios/{scenario.name}/logs"
        try:
            result = run_scenario(settings, scenario, out, keep=keep, web_console=web_console)
        except (InfraError, ServiceStartFailed) as exc:
            raise _fail(f"scenario {scenario.name} failed: {exc} (logs: {logs})") from exc
        if as_json:
            typer.echo(json.dumps(result.to_json(), default=str))
        else:
            if result.report is not None:
                print_report(console, result.report)
            for check in result.failed:
                err.print(f"[red]✘ {check.name}[/red]: {check.detail}")
        if not result.passed:
            failed.append(scenario.name)
            if not as_json:
                err.print(
                    f"scenario {scenario.name}: {len(result.failed)} of {len(result.checks)} "
                    f"checks failed (logs: {logs})"
                )
    if failed:
        raise typer.Exit(1)


def _show_figures(
    figures: dict[str, Any],
    path: Path,
    print_results: Callable[[Console, dict[str, Any]], None],
    as_json: bool,
) -> None:
    """A run's figures on stdout: as JSON, or as its tables and where the file went."""
    if as_json:
        typer.echo(json.dumps(figures, default=str))
    else:
        print_results(console, figures)
        console.print(f"figures written to {path}")


def _own_databases() -> None:
    """A service's database URL set by hand names the user's database, not the one of a
    stack of its own (bench, chaos, soak): that stack and the services it starts derive
    their own."""
    for service in SERVICES:
        os.environ.pop(f"DWSIM_{service.upper()}_DATABASE_URL", None)


@app.command()
def bench(
    quick: bool = typer.Option(False, help="Small volumes: proves every figure is produced."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Throughput, latency and scaling of the whole pipeline, beside the raw broker and database.

    Runs on a stack of its own (under DWSIM_HOME/bench, topics prefixed bench-, databases
    bench_), started on empty databases every time, also beside your stack on the servers of
    DWSIM_KAFKA_BOOTSTRAP or DWSIM_DATABASE_URL; writes bench/results/<time>.json. The full
    run takes about 16 minutes on 2 cores.
    """
    from services.simulator.bench import (
        NON_DEFAULT_SETTINGS,
        BenchSizes,
        print_results,
        run_bench,
    )
    from services.simulator.results_file import new_results_path, save_figures

    _own_databases()
    settings = Settings()
    own = settings.model_copy(
        update={
            "home": settings.home / "bench",
            # Topics, consumer groups, databases and roles of its own: with DWSIM_KAFKA_BOOTSTRAP
            # or DWSIM_DATABASE_URL set, the bench shares the servers with the user's stack,
            # never its data (nor its roles' passwords, which provisioning sets).
            "topic_prefix": f"{settings.topic_prefix}bench-",
            "database_prefix": f"{settings.database_prefix}bench_",
            **{f"{service}_database_url": None for service in SERVICES},
            # Every other setting is the services' default; these are printed and stored with
            # the figures, each with its reason.
            **{name: setting.value for name, setting in NON_DEFAULT_SETTINGS.items()},
        }
    )
    sizes = BenchSizes.quick() if quick else BenchSizes.full()
    err = Console(stderr=True)
    try:
        # Every run starts on empty databases, as the figures of different runs are only
        # comparable so: on the data of one earlier run, PostgreSQL's working set outgrew its
        # buffers (the bridge's records were read back from the OS 2.0 million times, against
        # 39,000 on empty databases).
        start_afresh(own)
        with running_stack(own):
            results = asyncio.run(_bench_run(own, sizes, err, run_bench))
    except (InfraError, ServiceStartFailed, ApiError, TimeoutError) as exc:
        raise _fail(f"bench failed: {exc}") from exc
    _show_figures(results, save_figures(results, new_results_path("bench")), print_results, as_json)


async def _bench_run(settings: Settings, sizes: Any, console: Console, run: Any) -> Any:
    return await run(settings, sizes, console)


@app.command()
def chaos(
    fault: list[str] = typer.Option(  # noqa: B008
        [], "--fault", help="Run only this fault (repeat for several); default: every fault."
    ),
    invoices: int = typer.Option(2000, help="Invoices confirmed during each fault's load."),
    lines: int = typer.Option(5, help="Billed lines per invoice."),
    fault_s: float = typer.Option(20.0, "--fault-seconds", help="How long a fault lasts."),
    deadline_s: float = typer.Option(
        600.0, "--deadline", help="Seconds any wait may take (agreement after healing included)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Every fault under load, judged by an independent checker: lost, duplicated, reordered.

    Each fault runs on a stack of its own (under DWSIM_HOME/chaos/<fault>, topics prefixed
    chaos-<fault>-, databases chaos_<fault>_), started on empty databases; writes
    chaos/results/<time>.json. Exits 1 when any fault lost, doubled, reordered or mismatched
    anything, or could not finish.
    """
    from services.simulator.chaos import (
        FAULT_NAMES,
        ChaosSizes,
        print_results,
        run_chaos,
    )
    from services.simulator.results_file import new_results_path

    unknown = sorted(set(fault) - set(FAULT_NAMES))
    if unknown:
        raise _fail(f"unknown fault {', '.join(unknown)}; known: {', '.join(FAULT_NAMES)}", 2)
    _own_databases()
    err = Console(stderr=True)
    path = new_results_path("chaos")
    err.print(f"figures go to {path}, written after every fault")
    try:
        results = run_chaos(
            Settings(),
            tuple(fault) or FAULT_NAMES,
            ChaosSizes(invoices, lines, fault_s, deadline_s),
            err,
            path,
        )
    except (InfraError, ServiceStartFailed) as exc:
        raise _fail(f"chaos failed: {exc}") from exc
    _show_figures(results, path, print_results, as_json)
    if not results["passed"]:
        raise typer.Exit(1)


@app.command()
def soak(
    rounds: int = typer.Option(24, min=2, help="Rounds of the whole invoice cycle."),
    invoices: int = typer.Option(5, min=1, help="Invoices confirmed and posted per round."),
    lines: int = typer.Option(5, min=1, help="Billed lines per invoice."),
    retention_s: float = typer.Option(
        10.0, "--retention", help="DWSIM_RETENTION_S of the soak's stack (seconds)."
    ),
    inbox_retention_s: float = typer.Option(
        20.0, "--inbox-retention", help="DWSIM_INBOX_RETENTION_S of the soak's stack (seconds)."
    ),
    retention_interval_s: float = typer.Option(
        1.0, "--retention-interval", help="DWSIM_RETENTION_INTERVAL_S of the soak's stack."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Bounded storage: rounds of the whole cycle under short retention, the databases read
    after each round; do the pruned tables level off?

    Runs on a stack of its own (under DWSIM_HOME/soak, topics prefixed soak-, databases
    soak_), started on empty databases; writes soak/results/<time>.json. Exits 0 when every
    pruned table levelled off, 1 when one did not, 2 when the run failed or was too short to
    tell.
    """
    from services.simulator.results_file import new_results_path, save_figures
    from services.simulator.soak import (
        SoakRetention,
        SoakSizes,
        exit_code,
        print_results,
        run_soak,
    )

    if inbox_retention_s < retention_s:
        raise _fail("--inbox-retention must be at least --retention (as the services require)", 2)
    _own_databases()
    figures = run_soak(
        Settings(),
        SoakSizes(rounds, invoices, lines),
        SoakRetention(retention_s, inbox_retention_s, retention_interval_s),
        Console(stderr=True),
    )
    _show_figures(figures, save_figures(figures, new_results_path("soak")), print_results, as_json)
    code = exit_code(figures)
    if code:
        raise typer.Exit(code)


# The console's views in the terminal (services/simulator/cli_twins.py).
register_twins(app, _run, _fail, console)
