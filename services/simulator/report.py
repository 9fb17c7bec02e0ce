"""Rendering a reconciliation report and figures for people (rich) and machines (JSON)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from services.simulator.reconcile import Report


def print_report(console: Console, report: Report) -> None:
    """The reconciliation as a table, with a verdict that says what it compared."""
    if report.agree:
        console.print(
            f"[green]✔ Dataverse and Finance agree[/green] over {report.invoices} confirmed "
            f"invoices and {report.proposals} proposals: {report.summary()}"
        )
        return
    table = Table("invoice", "actual", "difference", "cause", "explained", title="Reconciliation")
    for diff in report.differences:
        table.add_row(
            _short(diff.invoice_id),
            _short(diff.actual_id),
            diff.kind,
            diff.cause,
            "yes" if diff.explained else "[red]NO[/red]",
        )
    console.print(table)
    console.print(
        f"{len(report.differences)} difference(s), {len(report.unexplained)} unexplained, "
        f"over {report.invoices} confirmed invoices and {report.proposals} proposals: "
        f"{report.summary()}"
    )


def _short(record_id: str | None) -> str:
    """A UUID's first eight characters (enough to find it in a trace); other ids whole."""
    if record_id is None:
        return "—"
    return record_id[:8] if len(record_id) > 12 else record_id


def print_figures(console: Console, figures: dict[str, Any]) -> None:
    """Throughput and latency of a run."""
    table = Table("figure", "value", title="Figures")
    for key, value in figures.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                table.add_row(f"{key}: {sub}", str(v))
        else:
            table.add_row(key, str(value))
    console.print(table)
