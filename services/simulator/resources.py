"""What the stack's processes use: resident memory and CPU seconds, read from the OS.

The benchmark reports them beside its speeds: on a small machine the pipeline is bound by the
CPU its processes share, and where those seconds go says what to make cheaper next.
"""

from __future__ import annotations

import psutil

from infra import broker, postgres
from services.common.settings import SERVICES, Settings
from services.simulator.processes import service_status


def service_memory_mb(settings: Settings) -> dict[str, float]:
    """Resident memory of each running service."""
    memory = {}
    for name in SERVICES:
        status = service_status(settings, name)
        if status.pid:
            memory[name] = psutil.Process(status.pid).memory_info().rss / 2**20
    return memory


def stack_cpu_s(settings: Settings) -> dict[str, float]:
    """CPU seconds used so far by each service, the local broker and the local PostgreSQL.

    PostgreSQL is all its processes (`postgres_cpu_s_by_database`, added up): the live ones,
    and through the postmaster's reaped children, the backends that have exited. A broker or
    database configured elsewhere (`DWSIM_KAFKA_BOOTSTRAP`, `DWSIM_DATABASE_URL`) is not on
    this machine and is left out.
    """
    pids = {name: service_status(settings, name).pid for name in SERVICES}
    pids["broker"] = broker.status(settings).pid
    used: dict[str, float] = {}
    for name, pid in pids.items():
        if pid is None:
            continue
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue  # stopped between the status read and now
        used[name] = times.user + times.system
    by_database = postgres_cpu_s_by_database(settings)
    if by_database:
        used["postgres"] = sum(by_database.values())
    return used


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


def postgres_cpu_s_by_database(settings: Settings) -> dict[str, float]:
    """CPU seconds of the local PostgreSQL, split by what the processes worked for.

    A backend's title (`postgres: <user> <database> <client> <activity>`) names its
    database, so each service's statements are counted under its service's name; the server's
    own processes (WAL writer, checkpointer, autovacuum, ...) are `server`, and processes that
    have exited since the server started, which can no longer be told apart, are `exited`:
    mostly autovacuum workers, which the server starts for one table at a time, and closed
    connections. Empty when the PostgreSQL is not a local one.
    """
    pid = postgres.status(settings).pid
    if pid is None:
        return {}
    try:
        server = psutil.Process(pid)
        own = server.cpu_times()
        used = {
            "server": own.user + own.system,
            "exited": own.children_user + own.children_system,
        }
        children = server.children(recursive=True)
    except psutil.Error:
        return {}
    for child in children:
        try:
            title = " ".join(child.cmdline()).removeprefix("postgres: ")
            times = child.cpu_times()
        except psutil.Error:
            continue  # exited meanwhile: counted under `exited` on the next reading
        words = title.split()
        if title.startswith(_SERVER_PROCESSES) or len(words) < 2:
            who = "server"
        else:  # named by service: the bench's databases carry a prefix of their own
            who = words[1].removeprefix(settings.database_prefix)
        used[who] = used.get(who, 0.0) + times.user + times.system
    return used


def cpu_used_since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per process (or database) between two readings of `stack_cpu_s` (or
    `postgres_cpu_s_by_database`); one first seen in the second reading counts from zero."""
    return {name: after[name] - before.get(name, 0.0) for name in after}
