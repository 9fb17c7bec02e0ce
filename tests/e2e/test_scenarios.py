"""Every scenario end to end: services as processes, faults injected by the scenario itself.

The test reads the scenario's own checks (`--json`): each fact the scenario states is a check
that held, the ones that make the scenario's point among them, and the closing reconciliation
agreed after comparing the sides by id.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from services.common.settings import PROJECT_ROOT
from services.finance.domain import NOT_POSTED_YET, ONE_WAY_MESSAGE
from services.simulator.scenarios import SCENARIOS
from tests.e2e.conftest import run_dwsim

pytestmark = pytest.mark.integration

# Checks each scenario must have made (by a part of their name): its point, stated exactly.
REQUIRED_CHECKS = {
    "happy-path": ["6 invoices confirmed, synced, imported and posted"],
    "finance-down": [
        "receipts timed out",
        "the alert rule paused the proposal map",
        "in Dataverse's commit order",
    ],
    "map-paused": [
        "proposal map paused before any load",
        "headers queued",
        "each header queued behind the paused map",
        "in Dataverse's commit order",
    ],
    "direct-proposal-refused": [
        f"POST /proposals refused with 405: cannot create proposal (new) in Finance: "
        f"{ONE_WAY_MESSAGE}",
        "refused with 405: cannot delete proposal",
        "nothing changed in Finance",
        "the bridge refused to carry the edit back",
    ],
    "missing-exchange-rate": [
        "with the reason 'no exchange rate for EUR→USD on <its accounting date>'",
        "the next import takes the rows",
    ],
    "journal-not-posted": [f"each proposal waits: '{NOT_POSTED_YET}'", "journals posted"],
    "corrective-invoice": ["corrective invoice posted at minus half the original's net"],
    "platform-limits": [
        "the 1,500-line invoice fails whole",
        "the activity log says the transaction failed",
        "nothing of it reached Finance",
        "retried without the limits, the invoice reaches Finance whole",
    ],
    "poison-event": ["on invoice-confirmed.dlq with its reason"],
    "bridge-killed": ["bridge killed with SIGKILL", "4 more confirmed while the bridge is down"],
    "broker-restarted-empty": [
        "the events are gone",
        "dataverse published its events again",
    ],
}


def test_every_scenario_names_its_required_checks() -> None:
    assert sorted(REQUIRED_CHECKS) == sorted(SCENARIOS)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_holds_every_check_it_states(dwsim_home: Path, name: str) -> None:
    # One scenario also starts the web console on its stack, whose overview then shows it live.
    console = ["--console"] if name == "happy-path" else []
    result = run_dwsim(dwsim_home, "scenario", "run", name, "--json", *console, timeout=600)
    assert_scenario_held(result, name)
    if console:
        assert "stack (one-time login link): http://127.0.0.1:" in result.stderr, result.stderr


# Issue 23: the scenarios whose faults take a side down hold their point with two instances of
# every service (a fault on "finance" stops both), and the broker's loss is recovered by both.
TWO_OF_EACH = "bridge=2,finance=2,dataverse=2"


@pytest.mark.parametrize("name", ["bridge-killed", "finance-down", "broker-restarted-empty"])
def test_scenario_holds_with_two_instances_of_every_service(dwsim_home: Path, name: str) -> None:
    result = run_dwsim(
        dwsim_home,
        "scenario",
        "run",
        name,
        "--json",
        timeout=600,
        env={"DWSIM_INSTANCES": TWO_OF_EACH},
    )
    assert_scenario_held(result, name)
    # The second instances ran: each wrote a log of its own under the scenario's home.
    for second in ("bridge-2", "finance-2", "dataverse-2"):
        assert list(dwsim_home.rglob(f"logs/{second}.log")), f"{second} never ran"


def assert_scenario_held(result: subprocess.CompletedProcess[str], name: str) -> None:
    """Every check the scenario states held, its required ones among them, and the closing
    reconciliation agreed after comparing the sides by id."""
    output = result.stdout[-4000:] + result.stderr[-4000:]
    assert result.stdout.strip(), output
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    failed = [c for c in outcome["checks"] if not c["passed"]]
    assert not failed, f"{failed}\n{output}"
    assert outcome["passed"] is True and result.returncode == 0, output
    names = [c["name"] for c in outcome["checks"]]
    for required in REQUIRED_CHECKS[name]:
        assert any(required in n for n in names), f"no check {required!r} in {names}"
    # The closing reconciliation is the last check, and compared the sides by id.
    assert names[-1] == "Dataverse and Finance agree"
    report = outcome["report"]
    assert report["agree"] is True and report["differences"] == []
    compared = {c["what"]: c["count"] for c in report["compared"]}
    assert compared["billed lines"] > 0 and compared["posted customer invoices"] > 0


def test_scenario_list_names_every_scenario(dwsim_home: Path) -> None:
    result = run_dwsim(dwsim_home, "scenario", "list")
    assert result.returncode == 0, result.stderr
    for name in SCENARIOS:
        assert name in result.stdout


def test_a_users_scenario_file_runs_like_a_built_in_one(dwsim_home: Path) -> None:
    # Written from docs/scenarios.md only; a fault no built-in scenario injects (SIGSTOP).
    user_file = PROJECT_ROOT / "examples" / "scenarios" / "broker_hangs.py"
    result = run_dwsim(dwsim_home, "scenario", "run", str(user_file), "--json", timeout=600)
    output = result.stdout[-4000:] + result.stderr[-4000:]
    assert result.stdout.strip(), output
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["scenario"] == "broker-hangs"
    names = [c["name"] for c in outcome["checks"]]
    assert "4 invoices confirmed while the broker hung" in names
    assert names[-1] == "Dataverse and Finance agree"
    assert outcome["passed"] is True and result.returncode == 0, output
    assert outcome["report"]["agree"] is True
