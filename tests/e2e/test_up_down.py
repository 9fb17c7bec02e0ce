"""`dwsim up` starts the services as processes and says where they are; `dwsim down` stops
what it started and nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.conftest import run_dwsim

pytestmark = pytest.mark.integration


def _infra(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DWSIM_")}
    env["DWSIM_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "infra", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_up_status_down_stops_only_what_dwsim_started(dwsim_home: Path) -> None:
    assert _infra(dwsim_home, "up").returncode == 0  # started by someone else
    try:
        up = run_dwsim(dwsim_home, "up")
        assert up.returncode == 0, up.stdout + up.stderr
        assert "/docs" in up.stdout
        status = json.loads(run_dwsim(dwsim_home, "status", "--json").stdout)
        pids = []
        for name in ("dataverse", "finance", "bridge"):
            service = status["services"][name]
            assert service["running"], name
            assert httpx.get(f"{service['url']}/openapi.json", timeout=10).status_code == 200
            pids.append(service["pid"])
        assert {m["slug"] for m in status["maps"]} == {"invoices", "actuals"}
        assert all(m["state"] == "running" for m in status["maps"])

        down = run_dwsim(dwsim_home, "down")
        assert down.returncode == 0, down.stderr
        assert not any(
            psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids
        )
        after = json.loads(run_dwsim(dwsim_home, "status", "--json").stdout)
        assert after["broker"]["running"] and after["postgres"]["running"], (
            "dwsim down stopped infrastructure it had not started"
        )
    finally:
        _infra(dwsim_home, "down")
