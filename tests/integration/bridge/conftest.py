"""Fixtures of the bridge integration tests: bridge worker processes on the test's settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from services.common.settings import Settings
from tests.integration.bridge.bridge_harness import BridgeProcess

StartBridge = Callable[..., BridgeProcess]


@pytest.fixture
async def start_bridge(settings: Settings, tmp_path: Path) -> AsyncIterator[StartBridge]:
    """Start bridge workers (subprocesses) on the test's settings; all are stopped after."""
    started: list[BridgeProcess] = []

    def start(own: Settings | None = None, **env: Any) -> BridgeProcess:
        process = BridgeProcess(
            own or settings, tmp_path / f"bridge-{len(started)}.log", **env
        ).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
async def bridge(start_bridge: StartBridge) -> BridgeProcess:
    """One bridge worker, ready (API up, partitions assigned)."""
    process = start_bridge()
    await process.wait_ready()
    return process
