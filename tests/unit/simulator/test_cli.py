"""The CLI's fixes that need no stack (issue 21): errors on stderr naming the service that is
missing, `status` failing when something is down, `--version`, `logs`, `alerts --set`'s
arguments and `trace`'s prefix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.simulator.cli import app
from services.simulator.trace import resolve_invoice_id

runner = CliRunner()


def _invoke(home: Path, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), env={"DWSIM_HOME": str(home), "COLUMNS": "200"})


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == "dwsim 0.1.0"


def test_an_error_goes_to_stderr_and_names_the_service_the_command_needs(tmp_path: Path) -> None:
    result = _invoke(tmp_path, "maps", "--json")
    assert result.exit_code == 1
    assert result.stdout == ""  # `dwsim maps --json | jq` reads nothing but data
    assert "bridge is not running" in result.stderr
    assert "dataverse" not in result.stderr


def test_status_exits_non_zero_naming_what_is_down(tmp_path: Path) -> None:
    result = _invoke(tmp_path, "status", "--json")
    assert result.exit_code == 3
    data = json.loads(result.stdout)
    assert data["services"]["console"]["running"] is False
    assert "down: broker, postgres, dataverse, finance, bridge, console" in result.stderr


def test_logs_prints_the_last_lines_of_a_service_and_refuses_unknown_ones(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "bridge.log").write_text("one\ntwo\nthree\n")
    result = _invoke(tmp_path, "logs", "bridge", "-n", "2")
    assert result.exit_code == 0
    assert result.stdout == "two\nthree\n"
    unknown = _invoke(tmp_path, "logs", "kafka")
    assert (
        unknown.exit_code == 1 and "one of: dataverse, finance, bridge, console" in unknown.stderr
    )
    missing = _invoke(tmp_path, "logs", "finance")
    assert missing.exit_code == 1 and "no log of finance" in missing.stderr


def test_alerts_set_needs_every_value(tmp_path: Path) -> None:
    result = _invoke(tmp_path, "alerts", "--set", "1", "--count", "3")
    assert result.exit_code == 1
    assert "--set needs --error-type, --window-s, --action" in result.stderr


IDS = [
    "e352a36a-c3aa-4fe2-8bba-4c593db8dc07",
    "e3f00000-0000-4000-8000-000000000001",
    "7d1c0000-0000-4000-8000-000000000002",
]


def test_trace_takes_a_unique_prefix() -> None:
    assert resolve_invoice_id(IDS, "e352") == IDS[0]
    assert resolve_invoice_id(IDS, "7D1C") == IDS[2]
    assert resolve_invoice_id(IDS, IDS[1]) == IDS[1]


@pytest.mark.parametrize(
    ("given", "said"),
    [("e3", "2 invoice ids start with 'e3'"), ("ffff", "no invoice id starts with 'ffff'")],
)
def test_trace_refuses_an_ambiguous_or_unknown_prefix(given: str, said: str) -> None:
    with pytest.raises(LookupError, match=said):
        resolve_invoice_id(IDS, given)
