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
    assert outcome["report"]["agree"] is True
    assert outcome["report"]["confirmed_invoices"] == 20
    assert outcome["report"]["proposals"] == 20
    assert outcome["figures"]["invoices"] == 20
