"""What the stack's processes use: resident memory and CPU seconds, read from the OS.

The benchmark reports them beside its speeds: on a small machine the pipeline is bound by the
CPU its processes share, and where those seconds go says what to make cheaper next.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import psutil

from infra import broker, postgres
from services.common.settings import SERVICES, Settings
from services.simulator.processes import instances_of, service_status, split_instance


def instance_pids(settings: Settings) -> dict[str, int]:
    """The pid of every running instance of every service, by instance name (`bridge`,
    `bridge-2`): a stack run with several instances is measured whole, not by its first."""
    pids = {}
    for service in SERVICES:
        for name in instances_of(settings, service):
            pid = service_status(settings, name).pid
            if pid:
                pids[name] = pid
    return pids


def _stack_pids(settings: Settings) -> dict[str, int]:
    """Every running instance's pid (see `instance_pids`) and the local broker's."""
    pids = instance_pids(settings)
    broker_pid = broker.status(settings).pid
    if broker_pid:
        pids["broker"] = broker_pid
    return pids


def service_memory_mb(settings: Settings) -> dict[str, float]:
    """Resident memory of each running instance of each service, by instance name."""
    memory = {}
    for name, pid in instance_pids(settings).items():
        with contextlib.suppress(psutil.Error):  # stopped since its status was read
            memory[name] = psutil.Process(pid).memory_info().rss / 2**20
    return memory


class PeakMemory:
    """The highest resident memory of each service and of the local broker while it runs,
    read every `every_s` seconds: a reading after a phase misses the peak of a phase that
    builds something large and lets it go (a 50,000-line confirmation).

    PostgreSQL is left out: its processes share their buffers, so the sum of their resident
    memory counts the same pages many times, and no one of them stands for the server.
    """

    def __init__(self, settings: Settings, every_s: float = 0.2) -> None:
        pids = _stack_pids(settings)
        self._processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._every_s = every_s
        self.peak_mb: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def read(self) -> None:
        """One reading of every process; a process that has stopped is skipped."""
        for name, process in self._processes.items():
            try:
                mb = process.memory_info().rss / 2**20
            except psutil.Error:
                continue
            self.peak_mb[name] = max(self.peak_mb.get(name, 0.0), mb)

    async def _sample(self) -> None:
        while True:
            self.read()
            await asyncio.sleep(self._every_s)

    async def __aenter__(self) -> PeakMemory:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.read()  # the end of the phase is read too, however short it was


@dataclass(frozen=True)
class ProcessCpu:
    """One process's CPU seconds since it started, and what it is counted under: `process`
    is the stack's process (a service, `broker`, `postgres`), `database` what a PostgreSQL
    process worked for (a service's database, or `server` for its own processes)."""

    process: str
    cpu_s: float
    database: str | None = None


# A process is its pid and its start time: a pid the kernel hands out again is a new process.
ProcessKey = tuple[int, float]


@dataclass(frozen=True)
class CpuReading:
    """The CPU of every process of the stack at one moment, by process, and the CPU of the
    PostgreSQL server's children that it has reaped (exited), which it reports in total only."""

    processes: dict[ProcessKey, ProcessCpu]
    postgres_reaped_s: float | None = None


def read_cpu(settings: Settings) -> CpuReading:
    """Each service (every instance of it, counted under the service's name), the local
    broker and every process of the local PostgreSQL, by pid. A broker or database configured
    elsewhere (`DWSIM_KAFKA_BOOTSTRAP`, `DWSIM_DATABASE_URL`) is not on this machine and is
    left out."""
    processes: dict[ProcessKey, ProcessCpu] = {}
    for name, pid in _stack_pids(settings).items():
        try:
            process = psutil.Process(pid)
            times = process.cpu_times()
            service, _ = split_instance(name)  # `broker` stays `broker`
            processes[(pid, process.create_time())] = ProcessCpu(service, times.user + times.system)
        except psutil.Error:
            continue  # stopped between the status read and now
    reaped = _read_postgres(settings, processes)
    return CpuReading(processes, reaped)


def _read_postgres(settings: Settings, into: dict[ProcessKey, ProcessCpu]) -> float | None:
    pid = postgres.status(settings).pid
    if pid is None:
        return None
    try:
        server = psutil.Process(pid)
        own = server.cpu_times()
        into[(pid, server.create_time())] = ProcessCpu("postgres", own.user + own.system, "server")
        reaped: float = own.children_user + own.children_system
        children = server.children(recursive=True)
    except psutil.Error:
        return None
    for child in children:
        try:
            title = " ".join(child.cmdline()).removeprefix("postgres: ")
            times = child.cpu_times()
            key = (child.pid, child.create_time())
        except psutil.Error:
            continue  # exited meanwhile: its last reading stands (see `CpuWindow`)
        words = title.split()
        if title.startswith(_SERVER_PROCESSES) or len(words) < 2:
            who = "server"
        else:  # named by service: the bench's databases carry a prefix of their own
            who = words[1].removeprefix(settings.database_prefix)
        into[key] = ProcessCpu("postgres", times.user + times.system, who)
    return reaped


# The processes PostgreSQL runs for itself, by the start of their title: what is not a backend.
_SERVER_PROCESSES = (
    "autovacuum",
    "background writer",
    "checkpointer",
    "io worker",
    "logical replication",
    "walsummarizer",
    "walwriter",
)

# What PostgreSQL's reaped children used inside a window that no reading saw: processes that
# started and exited between two readings, and the last moments of those that exited.
BETWEEN_READINGS = "exited between readings"


class CpuWindow:
    """CPU used by each process between a first reading and the latest, tracked by pid.

    A process counts what it used after the first reading (from zero if it started later),
    up to the last reading that saw it: one that exits mid-window keeps its last reading and
    contributes only what it used inside the window, never its lifetime. Counted so, no figure
    can go negative: each is a process's own clock, read later minus read earlier.

    The reaped total of PostgreSQL's children grows by whole lifetimes as children exit; what
    it grew by beyond the lifetimes last seen of the tracked processes that exited is what no
    reading saw (`BETWEEN_READINGS`): short-lived processes, and the tails of the others.
    """

    def __init__(self, first: CpuReading) -> None:
        self.first = first
        self.last = first
        self.latest = dict(first.processes)

    def add(self, reading: CpuReading) -> None:
        """A later reading; processes it no longer sees keep their last reading."""
        self.latest.update(reading.processes)
        self.last = reading

    def _used(self) -> list[tuple[ProcessCpu, float]]:
        used = []
        for key, latest in self.latest.items():
            before = self.first.processes.get(key)
            used.append((latest, latest.cpu_s - (before.cpu_s if before else 0.0)))
        return used

    def by_process(self) -> dict[str, float]:
        """CPU seconds per process of the stack (PostgreSQL as one), over the window."""
        totals: dict[str, float] = {}
        for process, seconds in self._used():
            totals[process.process] = totals.get(process.process, 0.0) + seconds
        if self._between_readings() is not None:
            totals["postgres"] = totals.get("postgres", 0.0) + self.postgres_between_readings()
        return totals

    def postgres_by_database(self) -> dict[str, float]:
        """PostgreSQL's CPU seconds over the window, by the database its processes worked
        for (`server` for its own processes); empty when it is not local."""
        totals: dict[str, float] = {}
        for process, seconds in self._used():
            if process.database is not None:
                totals[process.database] = totals.get(process.database, 0.0) + seconds
        if totals and self._between_readings() is not None:
            totals[BETWEEN_READINGS] = self.postgres_between_readings()
        return totals

    def postgres_between_readings(self) -> float:
        """See the class: never below zero (CPU clocks tick in 10 ms, read apart)."""
        return max(0.0, self._between_readings() or 0.0)

    def _between_readings(self) -> float | None:
        if self.first.postgres_reaped_s is None or self.last.postgres_reaped_s is None:
            return None
        gone = set(self.latest) - set(self.last.processes)
        seen_lifetimes = sum(
            self.latest[key].cpu_s for key in gone if self.latest[key].database is not None
        )
        grown = self.last.postgres_reaped_s - self.first.postgres_reaped_s
        return grown - seen_lifetimes
