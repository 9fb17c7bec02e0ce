"""Crashing the local PostgreSQL and starting it again on its port: a fault for the tests."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Literal

from infra import postgres
from infra.errors import InfraError
from infra.processes import pid_alive, port_open, read_state
from services.common.settings import POSTGRES_STATE, Settings
from tests.waiting import wait_for

# `immediate`: pg_ctl's immediate shutdown (every backend told to quit at once, no checkpoint);
# `sigkill`: the postmaster killed, its backends left to notice and die.
Crash = Literal["immediate", "sigkill"]
CRASHES: tuple[Crash, ...] = ("immediate", "sigkill")


def crash_postgres(settings: Settings, crash: Crash) -> tuple[int, int]:
    """Take the local PostgreSQL down as `crash` says; returns its old pid and its port."""
    state = read_state(settings.state_file(POSTGRES_STATE))
    assert state is not None, "the local PostgreSQL is not running"
    if crash == "immediate":
        postgres.stop(settings, mode="immediate")
    else:
        os.kill(state["pid"], signal.SIGKILL)
    return int(state["pid"]), int(state["port"])


async def start_postgres_again(settings: Settings, old_pid: int, port: int) -> None:
    """Start the crashed server again on the same port (the services hold its address), once
    the old one has let go of it; crash recovery runs as it starts."""

    async def old_one_gone() -> bool:
        return not pid_alive(old_pid) and not port_open(port)

    await wait_for(old_one_gone, 20, "the crashed PostgreSQL to let go of its port")
    end = time.monotonic() + 30
    while True:
        try:
            # Backends of a SIGKILLed postmaster may hold its shared memory a moment longer.
            await asyncio.to_thread(postgres.start, settings)
            break
        except InfraError:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.5)
    restarted = read_state(settings.state_file(POSTGRES_STATE))
    assert restarted is not None and restarted["port"] == port, (restarted, port)
