"""Every scenario end to end: services as processes, faults injected by the scenario itself,
and a clean reconciliation at the end."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.simulator.scenarios import SCENARIOS
from tests.e2e.conftest import run_dwsim

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_ends_with_both_sides_in_agreement(dwsim_home: Path, name: str) -> None:
    result = run_dwsim(dwsim_home, "scenario", "run", name, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Dataverse and Finance agree" in result.stdout, output[-4000:]


def test_scenario_list_names_every_scenario(dwsim_home: Path) -> None:
    result = run_dwsim(dwsim_home, "scenario", "list")
    assert result.returncode == 0, result.stderr
    for name in SCENARIOS:
        assert name in result.stdout
