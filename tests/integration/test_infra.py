"""`python -m infra up|status|down` as a user runs them, in a folder of its own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from services.common.ports import free_port
from services.common.settings import Settings

pytestmark = pytest.mark.integration


def _infra(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DWSIM_")}
    environ.update({"DWSIM_HOME": str(home), **env})
    return subprocess.run(
        [sys.executable, "-m", "infra", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _processes_using(home: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(home) in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(cmdline)
    return found


def _broker_pid(home: Path) -> int:
    return int(Settings(home=home).read_state("broker.json")["pid"])  # type: ignore[index]


def test_up_twice_status_down_leaves_no_process(tmp_path: Path) -> None:
    first = _infra(tmp_path, "up")
    assert first.returncode == 0, first.stderr
    broker_pid = _broker_pid(tmp_path)
    second = _infra(tmp_path, "up")
    assert second.returncode == 0, second.stderr
    assert _broker_pid(tmp_path) == broker_pid, "starting twice must reuse the running broker"
    status = _infra(tmp_path, "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert '"running": true' in status.stdout
    down = _infra(tmp_path, "down")
    assert down.returncode == 0, down.stderr
    assert not psutil.pid_exists(broker_pid) or (
        psutil.Process(broker_pid).status() == psutil.STATUS_ZOMBIE
    )
    assert _processes_using(tmp_path) == []
    assert _infra(tmp_path, "status").returncode == 3


def test_port_already_taken_is_reported_with_what_to_do(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = _infra(tmp_path, "up", DWSIM_BROKER_PORT=str(port))
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stdout
    assert "DWSIM_BROKER_PORT" in result.stdout
    assert _processes_using(tmp_path) == []
