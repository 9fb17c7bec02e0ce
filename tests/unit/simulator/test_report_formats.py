"""`dwsim reconcile --format junit|csv|html` on a reconciliation with a known difference:
JUnit XML valid against the JUnit schema with one test case per invoice, an unexplained
difference a failure with its cause, an explained one not; CSV and HTML carry every
difference."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import xmlschema

from services.simulator.reconcile import BridgeRecord, Report, reconcile
from services.simulator.report import CSV_COLUMNS, render_report, report_junit
from tests.unit.simulator.test_reconcile import (
    B1,
    B2,
    COST,
    INVOICE,
    PROPOSAL,
    PROPOSAL_MAP,
    REVERSAL,
    UNBILLED,
    agreeing,
    line,
)

JUNIT_XSD = Path(__file__).with_name("junit.xsd")
# Finance's line for b1 says 1500.00 where Dataverse billed 1600.00: no known cause.
WRONG_LINE_CAUSE = "billed actual b1: amount Dataverse 1600.00, Finance line 1500.00"


def known_difference() -> Report:
    """Invoice inv-1 with a wrong line amount (unexplained, and so are its net and its
    customer invoice), inv-2 whose header is queued behind the paused proposal map
    (explained)."""
    wrong = replace(
        PROPOSAL, lines=(replace(line(B1), amount=PROPOSAL.lines[0].amount - 100), line(B2))
    )
    queued = replace(INVOICE, invoice_id="inv-2")
    record = BridgeRecord("inv-2", "inv-2", PROPOSAL_MAP, "queued")
    return reconcile(
        agreeing(
            invoices=(INVOICE, queued),
            proposals=(wrong,),
            actuals=(B1, B2, COST, UNBILLED, REVERSAL),
            bridge_records=(record,),
        )
    )


def test_junit_is_valid_against_the_junit_schema() -> None:
    xmlschema.XMLSchema(str(JUNIT_XSD)).validate(report_junit(known_difference()))


def test_the_schema_check_catches_a_malformed_report() -> None:
    # The validation can fail: a test case without its required name is refused.
    bad = report_junit(known_difference()).replace('name="inv-1"', "", 1)
    assert not xmlschema.XMLSchema(str(JUNIT_XSD)).is_valid(bad)


def test_junit_has_one_case_per_invoice_and_fails_only_on_an_unknown_cause() -> None:
    root = ET.fromstring(render_report(known_difference(), "junit"))
    [suite] = root.findall("testsuite")
    cases = {case.get("name"): case for case in suite.findall("testcase")}
    assert sorted(cases) == ["inv-1", "inv-2"]
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    failures = cases["inv-1"].findall("failure")
    assert len(failures) == 3 and all(f.get("message") for f in failures)
    assert failures[0].get("message") == WRONG_LINE_CAUSE
    assert failures[0].get("type") == "proposal line differs from its billed actual"
    # Queued behind a paused map is a known cause: reported, not failed.
    assert cases["inv-2"].find("failure") is None
    out = cases["inv-2"].findtext("system-out") or ""
    assert "is paused" in out and "[known cause]" in out
    names = {p.get("name") for p in suite.iter("property")}
    assert "billed lines" in names


def test_an_agreeing_reconciliation_is_a_green_suite() -> None:
    root = ET.fromstring(report_junit(reconcile(agreeing())))
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "1" and suite.get("failures") == "0"
    assert not list(root.iter("failure"))


def test_csv_has_a_row_per_difference_with_its_cause() -> None:
    report = known_difference()
    rows = list(csv.DictReader(io.StringIO(render_report(report, "csv"))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == len(report.differences) >= 2
    wrong = [r for r in rows if r["cause"] == WRONG_LINE_CAUSE]
    assert wrong and wrong[0]["invoice_id"] == "inv-1" and wrong[0]["explained"] == "no"
    assert any(r["invoice_id"] == "inv-2" and r["explained"] == "yes" for r in rows)


class _Cells(HTMLParser):
    """The text of every table cell, row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        self._in_cell = tag == "td"

    def handle_endtag(self, tag: str) -> None:
        self._in_cell = self._in_cell and tag != "td"

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.rows[-1].append(data)


def test_html_shows_each_difference_with_its_cause() -> None:
    report = known_difference()
    page = render_report(report, "html")
    cells = _Cells()
    cells.feed(page)
    rows = [r for r in cells.rows if r]
    assert len(rows) == len(report.differences)
    assert [
        "inv-1",
        "b1",
        "proposal line differs from its billed actual",
        WRONG_LINE_CAUSE,
        "NO",
    ] in rows
    assert f"{len(report.differences)} difference(s), 3 unexplained" in page


def test_json_format_is_the_reports_json() -> None:
    report = known_difference()
    assert json.loads(render_report(report, "json")) == json.loads(
        json.dumps(report.to_json(), default=str)
    )
