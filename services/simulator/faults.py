"""Faults to inject into a running stack: the ones the scenarios use and the pytest plugin offers.

Each fault acts on what a stack's `DWSIM_HOME` started (a service process, the local broker) or
through the bridge's admin API (a table map), and each has its way back. The scenarios call
these functions; the plugin's `DwsimStack` offers them as methods.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import asyncpg

from infra import broker, postgres
from infra.errors import InfraError
from infra.processes import pid_alive, port_open, read_state, stop_process
from infra.topics import provision_async
from schemas.topics import Topic, topic_name
from services.common.errors import DwsimError
from services.common.kafka import make_producer
from services.common.settings import BROKER_STATE, POSTGRES_STATE, SERVICES, Settings
from services.simulator.clients import ApiClient, Services
from services.simulator.deadlines import until
from services.simulator.processes import (
    ServiceStatus,
    forget_instance,
    instance_home,
    instance_name,
    instances_of,
    launch_instance,
    live_instances,
    service_status,
    split_instance,
    start_service,
    stop_service,
)
from services.simulator.topic_reader import Record, read_to_end

# The bridge's two table maps by the short names its admin API accepts.
MAPS = ("invoices", "actuals")


class FaultNotAvailable(DwsimError):
    """The fault needs a process this stack did not start (e.g. the broker of
    `DWSIM_KAFKA_BOOTSTRAP`): dwsim cannot stop or freeze a server it does not own."""


# --- services ------------------------------------------------------------------------------------


def instances_hit(settings: Settings, name: str) -> list[str]:
    """The instances a fault on `name` acts on. A service named alone ("finance") is the whole
    side, every instance of it: "Finance is down" means no Finance answers, as a user means it
    (with one instance, that one). An instance named with its number ("finance-1",
    "finance-2") is that instance alone."""
    if name in SERVICES:
        return instances_of(settings, name)
    service, n = split_instance(name)
    return [instance_name(service, n)]


def stop(settings: Settings, service: str) -> bool:
    """Stop a service (every instance, or the one named) with SIGTERM: it shuts down cleanly;
    True if any was running."""
    return _each_stopped(settings, service, kill=False)


def kill(settings: Settings, service: str) -> bool:
    """Kill a service (every instance, or the one named) with SIGKILL: no shutdown, in-flight
    work is cut; True if any was running."""
    return _each_stopped(settings, service, kill=True)


def _each_stopped(settings: Settings, name: str, kill: bool) -> bool:
    stopped = [stop_service(settings, one, kill=kill) for one in instances_hit(settings, name)]
    return any(stopped)


def start(settings: Settings, service: str) -> ServiceStatus:
    """Start a stopped service (every instance, or the one named) and wait until each /health
    answers (each keeps its address); returns the first."""
    started = [start_service(settings, one) for one in instances_hit(settings, service)]
    return started[0]


def restart(settings: Settings, service: str, kill_first: bool = False) -> ServiceStatus:
    """Stop (or kill) a service (every instance, or the one named) and start it again; returns
    the first instance healthy."""
    _each_stopped(settings, service, kill=kill_first)
    return start(settings, service)


def kill_and_restart(settings: Settings, service: str) -> ServiceStatus:
    """SIGKILL a service (a crash: no shutdown, in-flight work cut) and start it again; returns
    it healthy. What it had not committed is redone from its inbox, outbox and the bridge's
    re-drive."""
    return restart(settings, service, kill_first=True)


def running(settings: Settings, service: str) -> bool:
    """Whether the service answers: any of its instances (or the one named) lives."""
    return any(service_status(settings, one).running for one in instances_hit(settings, service))


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
    bridge's re-drive of pending records and the operator's `recover_lost_log` (consumers
    rewound, outboxes replayed).
    """
    _local_broker_pid(settings)
    broker.stop(settings)
    broker.start(settings)
    await provision_async(settings)


async def rewind_consumers(services: Services) -> dict[str, list[str]]:
    """Have each service read its partitions again from their beginning (after the broker lost
    its log, before `replay_outboxes`: consumers mid-stream still hold positions of the old
    log); returns the partitions each rewound, by instance.

    An instance rewinds only the partitions assigned to it, so every live instance of every
    service is asked, not just the first.
    """
    settings = services.settings
    rewound: dict[str, list[str]] = {}
    for service in SERVICES:
        for instance in live_instances(settings, service):
            assert instance.url is not None  # live_instances keeps only those with an address
            client = ApiClient(instance.name, instance.url, settings.token_administrator)
            try:
                answer = await client.call("POST", "/consumer/rewind")
            finally:
                await client.close()
            rewound[instance.name] = list(answer["rewound"])
    return rewound


async def recover_lost_log(services: Services, since: datetime) -> dict[str, int]:
    """What an operator does after the broker lost its log: every consumer rewound to the
    beginning of the new log (`rewind_consumers`), then every outbox's events since `since`
    published again (`replay_outboxes`); returns how many events each service replayed."""
    await rewind_consumers(services)
    return await replay_outboxes(services, since)


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


async def kill_broker_and_restart_empty(settings: Settings, deadline_s: float = 30) -> None:
    """SIGKILL the local broker (no shutdown at all) and start it again empty (memory storage:
    its whole log, offsets and groups are gone), then provision the topics again."""
    pid = _local_broker_pid(settings)
    state = read_state(settings.state_file(BROKER_STATE))
    port = int(state["port"]) if state else 0
    os.kill(pid, signal.SIGKILL)

    async def gone() -> bool:
        # The port too: a broker started while the old port still answers would take another
        # one, and every client would go on calling the old address.
        return not pid_alive(pid) and not port_open(port)

    await until(gone, "the killed broker to exit and free its port", deadline_s, poll_s=0.05)
    restarted = broker.start(settings)
    if restarted.bootstrap != f"127.0.0.1:{port}":
        raise FaultNotAvailable(
            f"the broker came back on {restarted.bootstrap}, not on port {port}"
        )
    await provision_async(settings)


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


# --- PostgreSQL ----------------------------------------------------------------------------------

# `immediate`: pg_ctl's immediate shutdown (every backend told to quit at once, no checkpoint);
# `sigkill`: the postmaster killed, its backends left to notice and die.
PostgresCrash = Literal["immediate", "sigkill"]
POSTGRES_CRASHES: tuple[PostgresCrash, ...] = ("immediate", "sigkill")


def crash_postgres(settings: Settings, crash: PostgresCrash) -> tuple[int, int]:
    """Take the local PostgreSQL down as `crash` says; returns its old pid and its port (what
    `start_postgres_again` needs)."""
    state = read_state(settings.state_file(POSTGRES_STATE))
    if settings.database_url or state is None:
        raise FaultNotAvailable(
            "PostgreSQL is external (DWSIM_DATABASE_URL) or not running: dwsim can only crash "
            "the local PostgreSQL it started"
        )
    if crash == "immediate":
        postgres.stop(settings, mode="immediate")
    else:
        os.kill(state["pid"], signal.SIGKILL)
    return int(state["pid"]), int(state["port"])


async def start_postgres_again(
    settings: Settings, old_pid: int, port: int, deadline_s: float = 30
) -> None:
    """Start the crashed server again on the same port (the services hold its address), once
    the old one has let go of it; crash recovery runs as it starts."""

    async def old_one_gone() -> bool:
        return not pid_alive(old_pid) and not port_open(port)

    await until(old_one_gone, "the crashed PostgreSQL to let go of its port", 20, poll_s=0.05)
    end = time.monotonic() + deadline_s
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
    if restarted is None or restarted["port"] != port:
        raise FaultNotAvailable(f"PostgreSQL came back on {restarted}, not on port {port}")


async def crash_and_restart_postgres(
    settings: Settings, crash: PostgresCrash = "immediate", down_s: float = 0
) -> None:
    """Crash the local PostgreSQL, leave it down `down_s` seconds, and start it again."""
    old_pid, port = crash_postgres(settings, crash)
    await asyncio.sleep(down_s)
    await start_postgres_again(settings, old_pid, port)


@asynccontextmanager
async def table_locked(
    settings: Settings, service: str, table: str, hold_s: float, gap_s: float = 0.2
) -> AsyncIterator[None]:
    """A slow PostgreSQL for one service: for the block, a table of its database is locked
    (EXCLUSIVE: reads go on, every write waits) for `hold_s` seconds at a time, released for
    `gap_s`, and locked again, so each of its writers waits up to `hold_s` per statement.

    The lock is taken as the service's own role, on its own database; it is released when the
    block ends, whatever happens in it.
    """
    conn = await asyncpg.connect(settings.service_database_url(service))
    stop = asyncio.Event()

    async def hold() -> None:
        ident = await conn.fetchval("SELECT quote_ident($1)", table)
        while not stop.is_set():
            async with conn.transaction():
                await conn.execute(f"LOCK TABLE {ident} IN EXCLUSIVE MODE")
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), hold_s)
            await asyncio.sleep(gap_s)

    holder = asyncio.create_task(hold())
    try:
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(holder, hold_s + 10)
        finally:
            await conn.close()


# --- a second bridge worker ----------------------------------------------------------------------


@dataclass
class BridgeWorker:
    """A bridge worker started beside the stack's own, in the same consumer group: the two
    share the partitions. It keeps its state file in a home of its own, so the stack's record
    of its bridge is not overwritten."""

    process: subprocess.Popen[bytes]
    url: str
    home: Path

    @property
    def pid(self) -> int:
        """Its process id."""
        return self.process.pid

    def alive(self) -> bool:
        """Whether its process lives."""
        return self.process.poll() is None


def start_bridge_worker(settings: Settings) -> BridgeWorker:
    """Start one more bridge worker on the stack's broker and bridge database, as the
    bridge's next instance (`bridge-<n>`, see `processes.launch_instance`); it joins the
    bridge's consumer group (a rebalance gives it a share of the partitions)."""
    taken = [split_instance(name)[1] for name in instances_of(settings, "bridge")]
    name = instance_name("bridge", max(taken) + 1)
    process = launch_instance(settings, name)
    # The port `launch_instance` chose (asking `remembered_port` again would pick another one
    # once the worker listens on it).
    port = (read_state(settings.home / "ports.json") or {})[name]
    return BridgeWorker(
        process, f"http://{settings.api_host}:{port}", instance_home(settings, name)
    )


def kill_bridge_worker(settings: Settings, worker: BridgeWorker) -> None:
    """SIGKILL a bridge worker started by `start_bridge_worker` (its partitions go to the
    others once the group notices, after its session timeout)."""
    if worker.alive():
        os.kill(worker.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)
    forget_instance(settings, worker.home.name)


def stop_bridge_worker(settings: Settings, worker: BridgeWorker) -> None:
    """Stop a bridge worker started by `start_bridge_worker` (SIGTERM, then SIGKILL)."""
    if worker.alive():
        stop_process(worker.pid, deadline_s=15)
    worker.process.wait(timeout=10)
    forget_instance(settings, worker.home.name)


# --- poison, duplicates and reordering -----------------------------------------------------------


def poison_values() -> list[bytes]:
    """Events no consumer can apply: bytes that are not JSON, JSON that is not an object, and
    an envelope whose fields have the wrong types (schema-invalid)."""
    envelope = {
        "event_id": "not-a-uuid",
        "event_type": 42,
        "occurred_at": "yesterday",
        "source": None,
        "payload": {"records": "none"},
    }
    return [b"\x00\xffnot json{", b"[1, 2, 3]", json.dumps(envelope).encode()]


async def inject_poison(
    settings: Settings, topics: Sequence[Topic] = tuple(Topic), rounds: int = 1
) -> int:
    """Mix malformed and schema-invalid events into each topic (`rounds` times each kind);
    every consumer must put them on its `.dlq` with the reason and go on. Returns how many
    were sent."""
    sent = 0
    for _ in range(rounds):
        for topic in topics:
            values = poison_values()
            await send_raw(
                settings, topic_name(topic, settings.topic_prefix), values, key=b"poison"
            )
            sent += len(values)
    return sent


async def redeliver_topic(settings: Settings, topic: Topic, seed: int = 0) -> int:
    """Deliver again every message a topic holds now, with keys out of order: each message
    is re-published once (same partition, key, value and headers, so every consumer sees it
    twice), key by key in a shuffled order of keys, each key's messages in their original order.

    This is the duplicates-and-reordering fault by re-publishing captured messages, not a
    proxy: a consumer sees exactly what at-least-once delivery and a partition's interleaving
    of keys can give it (a message twice, another key's later message first), never a
    reordering within one key, which Kafka never delivers either. Returns how many were sent.
    """
    name = topic_name(topic, settings.topic_prefix)
    held = await read_to_end(settings, name)
    runs: dict[tuple[int, bytes | None], list[Record]] = defaultdict(list)
    for record in held:
        runs[(record.partition, record.key)].append(record)
    order = list(runs)
    random.Random(seed).shuffle(order)
    producer = make_producer(settings, "dwsim-fault-redeliver")
    await producer.start()
    try:
        # Sent without waiting for each acknowledgement (one partition keeps the order they are
        # sent in); all are acknowledged before this returns.
        acks = [
            await producer.send(
                name,
                record.value,
                key=record.key,
                partition=record.partition,
                headers=list(record.headers or ()),
            )
            for run in order
            for record in runs[run]
        ]
        await asyncio.gather(*acks)
    finally:
        await producer.stop()
    return len(held)


def now() -> datetime:
    """The current time, timezone-aware UTC (for `replay_outboxes`' `since`)."""
    return datetime.now(UTC)
