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

from infra import broker
from services.common.settings import PROJECT_ROOT, Settings
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


def test_up_that_cannot_reach_postgres_says_what_to_check_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DWSIM_")}
    env.update(
        {
            "DWSIM_HOME": str(tmp_path),
            # Nothing listens on port 1: the broker starts, then PostgreSQL cannot be reached.
            "DWSIM_DATABASE_URL": "postgresql://admin:s3cret@127.0.0.1:1/postgres",
        }
    )
    try:
        up = subprocess.run(
            [sys.executable, "-m", "services.simulator", "up"],
            env=env,
            text=True,
            capture_output=True,
            timeout=120,
            check=False,
            cwd=PROJECT_ROOT,
        )
        assert up.returncode != 0
        said = up.stdout + up.stderr
        assert "DWSIM_DATABASE_URL" in said and "127.0.0.1:1" in said, said
        assert "Traceback" not in said and "s3cret" not in said, said
        # The broker it had started is stopped again.
        assert not broker.status(Settings(home=tmp_path, kafka_bootstrap=None)).running
    finally:
        _infra(tmp_path, "down")
