"""The quick chaos run inside `make test`: three faults under a small load, judged by the
independent checker; any lost, duplicated, reordered or mismatched effect fails the test.

`dwsim chaos` runs as a user runs it, each fault on a stack of its own: the bridge SIGKILLed
and restarted twice, the broker SIGKILLed and restarted empty, every message of every topic
delivered twice with keys out of order. The full run (every fault, 2,000 invoices) is
`make chaos`, not part of `make test`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.e2e.conftest import run_dwsim

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("DWSIM_KAFKA_BOOTSTRAP") or os.environ.get("DWSIM_DATABASE_URL")),
    reason="the faults kill the local broker and services: a configured server is not ours",
)

QUICK_FAULTS = ("bridge-kill", "broker-restart-empty", "duplicates")


def test_quick_chaos_loses_duplicates_and_reorders_nothing(dwsim_home: Path) -> None:
    args = [f"--fault={name}" for name in QUICK_FAULTS]
    done = run_dwsim(
        dwsim_home,
        "chaos",
        *args,
        "--invoices=24",
        "--lines=3",
        "--fault-seconds=5",
        # A wait that does not end is a finding with the checker's last reading, not a hang.
        "--deadline=90",
        "--json",
        timeout=420,
    )
    assert done.stdout.strip(), done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    figures = {f["fault"]: f for f in results["faults"]}
    assert sorted(figures) == sorted(QUICK_FAULTS)
    for name, f in figures.items():
        findings = f["checker"].get("findings", [])[:10]
        assert f["error"] is None, (name, f["error"], findings)
        assert (f["lost"], f["duplicated"], f["reordered"], f["mismatched"]) == (0, 0, 0, 0), (
            name,
            findings,
        )
        # The checker judged the whole load: every invoice and billed line was there to count.
        assert f["invoices"] == 24, (name, f["checker"]["read"])
        assert f["billed_actuals"] == 24 * 3, (name, f["checker"]["read"])
        # A passed fault leaves its logs, not its databases (a full run's would be 13 GB).
        home = dwsim_home / "chaos" / name
        assert (home / "logs" / "bridge.log").exists(), sorted(home.iterdir())
        assert not (home / "postgres" / "data").exists(), name
    assert results["passed"]
    assert done.returncode == 0, done.stderr[-3000:]
