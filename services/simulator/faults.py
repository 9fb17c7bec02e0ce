"""Faults to inject into a running stack: the ones the scenarios use and the pytest plugin offers.

Each fault acts on what a stack's `DWSIM_HOME` started (a service process, the local broker) or
through the bridge's admin API (a table map), and each has its way back. The scenarios call
these functions; the plugin's `DwsimStack` offers them as methods.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

from infra import broker
from infra.topics import provision_async
from services.common.errors import DwsimError
from services.common.kafka import make_producer
from services.common.settings import Settings
from services.simulator.clients import Services
from services.simulator.deadlines import until
from services.simulator.processes import (
    ServiceStatus,
    service_status,
    start_service,
    stop_service,
)

# The bridge's two table maps by the short names its admin API accepts.
MAPS = ("invoices", "actuals")


class FaultNotAvailable(DwsimError):
    """The fault needs a process this stack did not start (e.g. the broker of
    `DWSIM_KAFKA_BOOTSTRAP`): dwsim cannot stop or freeze a server it does not own."""


# --- services ------------------------------------------------------------------------------------


def stop(settings: Settings, service: str) -> bool:
    """Stop a service with SIGTERM (it shuts down cleanly); True if it was running."""
    return stop_service(settings, service)


def kill(settings: Settings, service: str) -> bool:
    """Kill a service with SIGKILL (no shutdown: in-flight work is cut); True if it ran."""
    return stop_service(settings, service, kill=True)


def start(settings: Settings, service: str) -> ServiceStatus:
    """Start a stopped service and wait until its /health answers (it keeps its address)."""
    return start_service(settings, service)


def restart(settings: Settings, service: str, kill_first: bool = False) -> ServiceStatus:
    """Stop (or kill) a service and start it again; returns it healthy."""
    stop_service(settings, service, kill=kill_first)
    return start_service(settings, service)


def running(settings: Settings, service: str) -> bool:
    """Whether the service's process lives."""
    return service_status(settings, service).running


# --- the broker ----------------------------------------------------------------------------------


def _local_broker_pid(settings: Settings) -> int:
    status = broker.status(settings)
    if status.external or status.pid is None:
        raise FaultNotAvailable(
            "the broker is external (DWSIM_KAFKA_BOOTSTRAP): dwsim can only stop or freeze the "
            "local broker it started"
        )
    return status.pid


async def restart_broker_empty(settings: Settings) -> None:
    """Stop the local broker and start it again empty (memory storage: every event is gone),
    then provision the topics again, as an operator would.

    Offsets and consumer groups are gone too. What was in flight comes back through the
    bridge's re-drive of pending records and the services' outbox replay
    (`replay_outboxes`).
    """
    _local_broker_pid(settings)
    broker.stop(settings)
    broker.start(settings)
    await provision_async(settings)


async def replay_outboxes(services: Services, since: datetime) -> dict[str, int]:
    """Have each service publish again the events of its outbox written since `since` (what
    an operator does after the broker lost its log); returns how many each replayed."""
    replayed: dict[str, int] = {}
    for client in (services.dataverse, services.finance, services.bridge):
        answer = await client.call(
            "POST",
            "/outbox/replay",
            params={"since": since.isoformat()},
            token=services.settings.token_administrator,
        )
        replayed[client.service] = int(answer["replayed"])
    return replayed


@asynccontextmanager
async def broker_frozen(settings: Settings) -> AsyncIterator[int]:
    """The local broker stopped with SIGSTOP for the block (its sockets stay open, nothing
    answers: a hung broker, not a dead one), and continued with SIGCONT after, whatever
    happens in the block. Yields the broker's pid."""
    pid = _local_broker_pid(settings)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGCONT)


# --- table maps ----------------------------------------------------------------------------------


async def map_state(services: Services, table_map: str) -> str:
    """A table map's state: not_running, initializing, running, paused or resuming."""
    return str((await services.bridge.get(f"/maps/{table_map}"))["state"])


async def wait_map_state(
    services: Services, table_map: str, states: Sequence[str], deadline_s: float = 120
) -> str:
    """Wait until the map is in one of `states`; returns the state reached."""

    async def reached() -> str | None:
        state = await map_state(services, table_map)
        return state if state in states else None

    return await until(reached, f"map {table_map} to reach {sorted(states)}", deadline_s)


async def pause_map(services: Services, table_map: str) -> str:
    """Pause a running map: its changes queue, in order, until it is resumed."""
    return str((await services.bridge.post(f"/maps/{table_map}/pause"))["state"])


async def resume_map(services: Services, table_map: str, deadline_s: float = 120) -> str:
    """Resume a paused map and wait until its queue is replayed (the map runs again)."""
    await services.bridge.post(f"/maps/{table_map}/resume")
    return await wait_map_state(services, table_map, ("running",), deadline_s)


async def stop_map(services: Services, table_map: str) -> str:
    """Stop a running map: nothing syncs (records are marked not synced) until it runs."""
    return str((await services.bridge.post(f"/maps/{table_map}/stop"))["state"])


async def run_map(services: Services, table_map: str, deadline_s: float = 120) -> str:
    """Run a stopped map and wait until it is running."""
    await services.bridge.post(f"/maps/{table_map}/run")
    return await wait_map_state(services, table_map, ("running",), deadline_s)


async def queued(services: Services, table_map: str) -> int:
    """How many records a paused map holds in its queue."""
    return int((await services.bridge.get(f"/maps/{table_map}/queue")).get("count", 0))


async def wait_queued(services: Services, table_map: str, n: int, deadline_s: float = 60) -> int:
    """Wait until the paused map holds at least `n` records in its queue."""

    async def enough() -> int | None:
        count = await queued(services, table_map)
        return count if count >= n else None

    return await until(enough, f"{n} queued records on map {table_map}", deadline_s)


# --- bad input -----------------------------------------------------------------------------------


async def send_raw(
    settings: Settings, topic: str, values: Sequence[bytes], key: bytes | None = None
) -> None:
    """Produce raw bytes to a topic (full name), e.g. a poison event the consumer must put on
    its `.dlq` with the reason and go on."""
    producer = make_producer(settings, "dwsim-fault")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()
