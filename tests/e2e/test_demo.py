"""`dwsim demo` end to end: all services as processes, real broker and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import run_dwsim

pytestmark = pytest.mark.integration


def test_demo_of_20_invoices_ends_with_both_sides_in_agreement(dwsim_home: Path) -> None:
    result = run_dwsim(dwsim_home, "demo", "--invoices", "20", "--json")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    report = outcome["report"]
    assert report["agree"] is True and report["differences"] == []
    assert report["confirmed_invoices"] == 20
    assert report["proposals"] == 20
    assert outcome["figures"]["invoices"] == 20
    # "Agree" rests on comparisons by id: every invoice, its lines, its posting and every
    # actual's accounting were compared, not counted.
    compared = {c["what"]: c["count"] for c in report["compared"]}
    assert compared["confirmed invoices"] == 20
    assert compared["invoice totals"] == 20
    assert compared["posted customer invoices"] == 20
    assert compared["billed lines"] >= 20
    assert compared["cost and unbilled-sales actuals"] > 0
    assert compared["journaled actuals"] == compared["cost and unbilled-sales actuals"]
    # Every synced actual was posted (journal or invoice) and its accounting compared.
    assert compared["actuals' accounting details"] == (
        compared["billed lines"] + compared["journaled actuals"]
    )
    assert compared["skip-sync actuals"] > 0
    assert compared["staged rows"] == compared["actuals' accounting details"]
