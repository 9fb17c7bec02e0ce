"""Rendering a reconciliation report and figures: for people (rich table, HTML), for machines
(JSON, CSV) and for CI servers (JUnit XML, one test case per confirmed invoice)."""

from __future__ import annotations

import csv
import html
import io
import json
import xml.etree.ElementTree as ET
from collections import defaultdict
from typing import Any

from rich.console import Console
from rich.table import Table

from services.simulator.reconcile import Difference, Report

REPORT_FORMATS = ("table", "json", "junit", "csv", "html")
# The JUnit test case that holds the differences of no invoice (e.g. a journal's actuals).
OUTSIDE_INVOICES = "actuals outside any invoice"
CSV_COLUMNS = ("invoice_id", "actual_id", "difference", "cause", "explained")


def print_report(console: Console, report: Report) -> None:
    """The reconciliation as a table, with a verdict that says what it compared, and the
    source transactions past Microsoft's live-sync limits."""
    limits = report.limits_sentence()
    if limits:
        console.print(f"[yellow]⚠ {limits}[/yellow] (docs/bridge.md, Microsoft's limits)")
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


def _by_invoice(report: Report) -> dict[str | None, list[Difference]]:
    grouped: dict[str | None, list[Difference]] = defaultdict(list)
    for diff in report.differences:
        grouped[diff.invoice_id].append(diff)
    return grouped


def report_junit(report: Report, suite: str = "dwsim reconciliation") -> str:
    """JUnit XML: one test case per confirmed invoice (and one for differences of no
    invoice). A difference without a known cause is a `<failure>` whose message is its cause;
    explained differences (e.g. queued behind a paused map) do not fail, and are listed in the
    case's `<system-out>`. What was compared goes to the suite's properties."""
    grouped = _by_invoice(report)
    cases: list[tuple[str, list[Difference]]] = [
        (iid, grouped.get(iid, [])) for iid in report.invoice_ids
    ]
    others = [d for key, diffs in grouped.items() if key not in report.invoice_ids for d in diffs]
    if others:
        cases.append((OUTSIDE_INVOICES, others))
    failures = sum(1 for _, diffs in cases if any(not d.explained for d in diffs))
    root = ET.Element("testsuites", name=suite, tests=str(len(cases)), failures=str(failures))
    root.set("errors", "0")
    element = ET.SubElement(
        root, "testsuite", name=suite, tests=str(len(cases)), failures=str(failures)
    )
    element.set("errors", "0")
    element.set("skipped", "0")
    properties = ET.SubElement(element, "properties")
    for comparison in report.compared:
        ET.SubElement(properties, "property", name=comparison.what, value=comparison.sentence())
    for name, diffs in cases:
        case = ET.SubElement(element, "testcase", name=name, classname="dwsim.reconcile.invoice")
        for diff in (d for d in diffs if not d.explained):
            failure = ET.SubElement(case, "failure", message=diff.cause, type=diff.kind)
            failure.text = _difference_line(diff)
        explained = [d for d in diffs if d.explained]
        if explained:
            out = ET.SubElement(case, "system-out")
            out.text = "\n".join(_difference_line(d) for d in explained)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _difference_line(diff: Difference) -> str:
    where = f" (actual {diff.actual_id})" if diff.actual_id else ""
    known = "known cause" if diff.explained else "no known cause"
    return f"{diff.kind}{where}: {diff.cause} [{known}]"


def report_csv(report: Report) -> str:
    """One row per difference: invoice, actual, difference, cause, explained (yes/no)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for d in report.differences:
        writer.writerow(
            (d.invoice_id or "", d.actual_id or "", d.kind, d.cause, "yes" if d.explained else "no")
        )
    return out.getvalue()


def report_html(report: Report) -> str:
    """A self-contained HTML page: the verdict, what was compared, and each difference."""
    verdict = (
        "Dataverse and Finance agree"
        if report.agree
        else f"{len(report.differences)} difference(s), {len(report.unexplained)} unexplained"
    )
    rows = "\n".join(
        '<tr class="{}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>'.format(
            "explained" if d.explained else "unexplained",
            html.escape(d.invoice_id or "—"),
            html.escape(d.actual_id or "—"),
            html.escape(d.kind),
            html.escape(d.cause),
            "yes" if d.explained else "NO",
        )
        for d in report.differences
    )
    compared = "\n".join(f"<li>{html.escape(c.sentence())}</li>" for c in report.compared)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dwsim reconciliation</title>
<style>body{{font-family:sans-serif}}td,th{{border:1px solid #ccc;padding:4px}}
table{{border-collapse:collapse}}.unexplained{{background:#fdd}}</style></head>
<body><h1>dwsim reconciliation</h1>
<p id="verdict">{html.escape(verdict)} over {report.invoices} confirmed invoices and
{report.proposals} proposals.</p>
<h2>Compared</h2><ul>{compared}</ul>
<h2>Differences</h2>
<table id="differences"><thead><tr><th>invoice</th><th>actual</th><th>difference</th>
<th>cause</th><th>explained</th></tr></thead><tbody>
{rows}
</tbody></table></body></html>
"""


def render_report(report: Report, fmt: str) -> str:
    """The report in one of REPORT_FORMATS other than "table" (which prints with rich)."""
    if fmt == "json":
        return json.dumps(report.to_json(), default=str) + "\n"
    if fmt == "junit":
        return report_junit(report)
    if fmt == "csv":
        return report_csv(report)
    if fmt == "html":
        return report_html(report)
    raise ValueError(f"unknown report format {fmt!r}; one of {', '.join(REPORT_FORMATS)}")
