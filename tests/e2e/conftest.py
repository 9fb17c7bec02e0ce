"""End-to-end tests run `dwsim` as a user does: services as processes, on a stack of their own."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.settings import PROJECT_ROOT


@pytest.fixture
def dwsim_home() -> Iterator[Path]:
    """A DWSIM_HOME of the test's own; whatever runs there is stopped afterwards."""
    home = PROJECT_ROOT / ".dwsim" / "tests" / f"e2e-{os.getpid()}-{os.urandom(3).hex()}"
    home.mkdir(parents=True)
    yield home
    run_dwsim(home, "down", timeout=120)
    subprocess.run(["rm", "-rf", str(home)], check=False)


def run_dwsim(
    home: Path, *args: str, timeout: float = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`dwsim ARGS` with DWSIM_HOME set, `env`'s settings, and nothing else of the caller's
    DWSIM_* settings."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DWSIM_")}
    environ.update({"DWSIM_HOME": str(home), "COLUMNS": "200", **(env or {})})
    for name in ("DWSIM_KAFKA_BOOTSTRAP", "DWSIM_DATABASE_URL"):
        if name in os.environ:
            environ[name] = os.environ[name]
    return subprocess.run(
        [sys.executable, "-m", "services.simulator", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=PROJECT_ROOT,
    )
