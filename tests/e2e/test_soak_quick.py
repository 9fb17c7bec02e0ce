"""`dwsim soak` with tiny sizes and a retention of seconds: what retention prunes is pruned while
the flow runs, the counts read from the databases fall, and the verdict is "levelled off".

The full soak (24 rounds of 5 invoices × 5 lines, retention 10 s) is `make soak`, not part
of `make test`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.e2e.conftest import run_dwsim

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("DWSIM_KAFKA_BOOTSTRAP") or os.environ.get("DWSIM_DATABASE_URL")),
    reason="the soak starts its own stack afresh (stops the local broker): not on a shared server",
)

# What the flow writes into in every round; the activity log only on state changes and errors.
WRITTEN_EVERY_ROUND = (
    "dataverse.dwsim_outbox",
    "dataverse.dwsim_inbox",
    "finance.dwsim_outbox",
    "finance.dwsim_inbox",
    "bridge.dwsim_outbox",
    "bridge.dwsim_inbox",
    "bridge.bridge_record.payload",
)


def test_quick_soak_prunes_while_the_flow_runs_and_levels_off(dwsim_home: Path) -> None:
    done = run_dwsim(
        dwsim_home,
        "soak",
        "--rounds=6",
        "--invoices=2",
        "--lines=2",
        "--retention=3",
        "--inbox-retention=6",
        "--retention-interval=0.5",
        "--json",
        timeout=240,
    )
    assert done.stdout.strip(), done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["error"] is None, figures["error"]
    assert figures["retention_settings"]["retention_s"] == 3.0
    assert figures["retention_settings"]["inbox_retention_s"] == 6.0
    readings = figures["readings"]
    assert [r["round"] for r in readings] == list(range(7))
    last, idle = readings[-1], figures["after_idle"]
    for key in WRITTEN_EVERY_ROUND:
        rows = [r["pruned"][key]["rows"] for r in readings]
        # Rows were pruned during the run: the table holds fewer than were written into it.
        assert last["pruned"][key]["rows"] < last["pruned"][key]["written"], (key, rows)
        # And the count falls once the flow stops for a retention: below its peak.
        assert idle["pruned"][key]["rows"] < max(rows), (key, rows, idle["pruned"][key])
    # The product's data is kept: the staged actuals grow with every round.
    staged = [r["kept"]["finance.actuals_staging"]["rows"] for r in readings]
    assert staged == sorted(staged) and staged[-1] > staged[1], staged
    verdicts = {v["table"]: v for v in figures["verdicts"]}
    for key in WRITTEN_EVERY_ROUND:
        assert verdicts[key]["levelled"] is True, verdicts[key]
    assert figures["levelled"] and not figures["too_short"]
    assert done.returncode == 0, done.stderr[-3000:]
