"""The console's CLI twins on a running stack (issue 21): activity, queue, records, alerts,
errors with their status, logs, and trace by a prefix of the invoice id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import run_dwsim

pytestmark = pytest.mark.integration


def _ok(home: Path, *args: str) -> str:
    done = run_dwsim(home, *args, timeout=300)
    assert done.returncode == 0, f"dwsim {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return done.stdout


def test_cli_twins_of_the_console(dwsim_home: Path) -> None:
    _ok(dwsim_home, "up")
    _ok(dwsim_home, "demo", "--invoices", "1")
    _ok(dwsim_home, "status")  # everything up: exit 0

    activity = json.loads(_ok(dwsim_home, "activity", "invoices", "--json"))
    assert activity and [e["id"] for e in activity] == sorted(
        (e["id"] for e in activity), reverse=True
    )
    queue = json.loads(_ok(dwsim_home, "queue", "invoices", "--json"))
    assert queue["count"] == 0 and queue["limits"]["max_bytes"] == 1 << 30

    status = json.loads(_ok(dwsim_home, "status", "--json"))
    assert status["services"]["console"]["running"]
    assert {m["state"] for m in json.loads(_ok(dwsim_home, "maps", "--json"))} == {"running"}

    records = json.loads(_ok(dwsim_home, "records", "--invoice", _invoice_id(dwsim_home), "--json"))
    # The skip-sync reversals leave no record: counted per invoice and reason instead.
    assert records and {r["status"] for r in records} == {"synced"}

    trace = _ok(dwsim_home, "trace", _invoice_id(dwsim_home)[:8])
    assert "posted" in trace
    assert "filtered" in trace
    journey = json.loads(_ok(dwsim_home, "trace", _invoice_id(dwsim_home), "--json"))
    reversals = [a for a in journey["dataverse"]["actuals"] if a["skip_sync"]]
    assert reversals  # confirming reverses each invoiced unbilled actual with skip sync
    assert [(f["reason"], f["source_rows"]) for f in journey["bridge"]["filtered"]] == [
        ("skip sync", len(reversals))
    ]
    unknown = run_dwsim(dwsim_home, "trace", "ffffffff")
    assert unknown.returncode == 1 and "no invoice id starts with" in unknown.stderr

    rules = json.loads(_ok(dwsim_home, "alerts", "--json"))
    rule = rules[0]["id"]
    changed = json.loads(
        _ok(
            dwsim_home,
            "alerts",
            "--set",
            str(rule),
            "--error-type",
            "target_refused",
            "--count",
            "4",
            "--window-s",
            "120",
            "--action",
            "notify",
            "--json",
        )
    )
    assert [
        (r["error_type"], r["error_count"], r["action"]) for r in changed if r["id"] == rule
    ] == [("target_refused", 4, "notify")]
    refused = run_dwsim(
        dwsim_home,
        "alerts",
        "--set",
        str(rule),
        "--error-type",
        "timeout",
        "--count",
        "0",
        "--window-s",
        "60",
        "--action",
        "pause",
    )
    assert refused.returncode == 1 and "422" in refused.stderr and refused.stdout == ""

    assert "status" in _ok(dwsim_home, "errors")
    assert "service_started" in _ok(dwsim_home, "logs", "console")


def _invoice_id(home: Path) -> str:
    records = json.loads(_ok(home, "records", "--map", "invoices", "--json"))
    return str(records[0]["invoice_id"])
