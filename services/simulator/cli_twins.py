"""The console's views in the terminal: `dwsim activity`, `queue`, `records`, `alerts` and
`logs`, each a CLI twin of a console page (services/console), reading the same APIs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from services.common.settings import SERVICES, Settings
from services.simulator.clients import Services
from services.simulator.processes import CONSOLE, log_path, split_instance

Run = Callable[[Settings, Any], Any]
Fail = Callable[..., typer.Exit]
LOGGED = (*SERVICES, CONSOLE)


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, default=str))


def register(app: typer.Typer, run: Run, fail: Fail, console: Console) -> None:
    """Add the twins to `app`, with the CLI's own way to call the services and to fail."""

    @app.command()
    def activity(
        map: str | None = typer.Argument(None, help="'invoices', 'actuals' or a full name"),
        kind: str | None = typer.Option(None, help="Only entries of this kind."),
        limit: int = typer.Option(50, min=1, help="Newest entries to show."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """A map's activity log (every map's without MAP), newest first."""

        async def work(services: Services) -> Any:
            return await services.bridge.get("/activity", map=map, kind=kind, limit=limit)

        entries = run(Settings(), work)
        if as_json:
            _echo_json(entries)
            return
        table = Table("at", "map", "kind", "message", "invoice")
        for e in entries:
            table.add_row(
                str(e["at"]),
                str(e.get("map_name") or "-"),
                e["kind"],
                e["message"],
                str(e.get("invoice_id") or ""),
            )
        console.print(table)

    @app.command()
    def queue(
        map: str = typer.Argument(..., help="'invoices', 'actuals' or a full name"),
        limit: int = typer.Option(100, min=1, help="Queued records to list, oldest first."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """A map's paused queue: count, bytes and oldest against the limits, then the records
        in the order they will be replayed."""

        async def work(services: Services) -> Any:
            return await services.bridge.get(f"/maps/{map}/queue", limit=limit)

        answer = run(Settings(), work)
        if as_json:
            _echo_json(answer)
            return
        limits = answer.get("limits") or {}
        console.print(
            f"{answer['map']} ({answer['state']}): {answer['count']} queued, "
            f"{answer['bytes']} of {limits.get('max_bytes', '?')} bytes, oldest "
            f"{answer['oldest'] or '-'} (limit {limits.get('max_age_s', '?')} s)",
            soft_wrap=True,
        )
        table = Table("#", "record", "invoice", "leg", "bytes", "queued at")
        for r in answer["records"]:
            table.add_row(
                str(r["position"]),
                r["record_key"],
                str(r.get("invoice_id") or ""),
                r["leg"],
                str(r["bytes"]),
                str(r["queued_at"]),
            )
        console.print(table)

    @app.command()
    def records(
        invoice: str | None = typer.Option(None, "--invoice", help="The invoice's full id."),
        status: str | None = typer.Option(None, help="pending, synced, failed, queued, ..."),
        map: str | None = typer.Option(None, help="'invoices', 'actuals' or a full name"),
        limit: int = typer.Option(1000, min=1),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """The bridge's records: status, attempts and reason of each mapped record."""

        async def work(services: Services) -> Any:
            return await services.bridge.get(
                "/records", invoice_id=invoice, status=status, map=map, limit=limit
            )

        found = run(Settings(), work)
        if as_json:
            _echo_json(found)
            return
        table = Table("record id", "map", "key", "status", "attempts", "reason", "updated")
        for r in found:
            table.add_row(
                str(r["record_id"]),
                r["map_name"],
                r["record_key"],
                r["status"],
                str(r["attempts"]),
                r.get("reason") or "",
                str(r.get("updated_at")),
            )
        console.print(table)

    @app.command()
    def alerts(
        set_rule: int | None = typer.Option(
            None, "--set", help="Change the rule with this id (give all four values)."
        ),
        error_type: str | None = typer.Option(None, help="timeout, target_refused, mapping, ..."),
        count: int | None = typer.Option(None, help="Errors in the window that fire the rule."),
        window_s: float | None = typer.Option(None, "--window-s", help="The window, in seconds."),
        action: str | None = typer.Option(None, help="notify, pause or stop."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """The alert rules; with --set ID, change one (the bridge refuses nonsense, 422)."""
        values = {"error_type": error_type, "count": count, "window_s": window_s, "action": action}
        if set_rule is not None:
            missing = [f"--{k.replace('_', '-')}" for k, v in values.items() if v is None]
            if missing:
                raise fail(f"--set needs {', '.join(missing)} as well")

        async def work(services: Services) -> Any:
            if set_rule is not None:
                await services.bridge.call("PUT", f"/alert-rules/{set_rule}", values)
            return await services.bridge.get("/alert-rules")

        rules = run(Settings(), work)
        if as_json:
            _echo_json(rules)
            return
        table = Table("id", "map", "error type", "count", "window s", "action", "last fired")
        for r in rules:
            table.add_row(
                str(r["id"]),
                r["map_name"],
                r["error_type"],
                str(r["error_count"]),
                f"{r['window_s']:g}",
                r["action"],
                str(r.get("last_fired_at") or "-"),
            )
        console.print(table)

    @app.command()
    def logs(
        service: str = typer.Argument(
            ..., help=f"One of: {', '.join(LOGGED)}; `<service>-<n>` for another instance."
        ),
        follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
        lines: int = typer.Option(50, "--lines", "-n", min=0, help="Last lines to show first."),
    ) -> None:
        """The log of a process `dwsim up` started (`bridge-2`: a service's second instance)."""
        if split_instance(service)[0] not in LOGGED:
            raise fail(f"no service {service!r}; one of: {', '.join(LOGGED)}")
        path = log_path(Settings(), service)
        if not path.exists():
            raise fail(f"no log of {service} at {path}: `dwsim up` starts it and writes one")
        _print_log(path, lines, follow)


def _print_log(path: Path, lines: int, follow: bool) -> None:
    with path.open("r", errors="replace") as log:
        tail = log.readlines()[-lines:] if lines else []
        for line in tail:
            typer.echo(line, nl=False)
        while follow:
            line = log.readline()
            if line:
                typer.echo(line, nl=False)
            else:
                time.sleep(0.2)  # a file has no way to say it grew; Ctrl-C ends following
