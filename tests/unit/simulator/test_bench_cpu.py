"""CPU over a window, tracked by pid: a process that exits mid-window counts only what it used
inside the window, and no figure goes negative."""

from __future__ import annotations

import pytest

from services.simulator.resources import (
    BETWEEN_READINGS,
    CpuReading,
    CpuWindow,
    ProcessCpu,
)

BRIDGE = ProcessCpu("bridge", 40.0)
SERVER = ProcessCpu("postgres", 5.0, "server")


def _backend(database: str, cpu_s: float) -> ProcessCpu:
    return ProcessCpu("postgres", cpu_s, database)


def test_a_backend_that_exits_mid_window_counts_only_what_it_used_inside_it() -> None:
    # A finance connection that had used 50 s before the window closes after using 0.3 s in
    # it; the server reaps it, and its reaped total grows by its whole lifetime (50.4 s).
    first = CpuReading(
        {(1, 0.0): BRIDGE, (10, 0.0): SERVER, (20, 1.0): _backend("finance", 50.0)},
        postgres_reaped_s=100.0,
    )
    middle = CpuReading(
        {(1, 0.0): BRIDGE, (10, 0.0): SERVER, (20, 1.0): _backend("finance", 50.3)},
        postgres_reaped_s=100.0,
    )
    last = CpuReading(
        {(1, 0.0): ProcessCpu("bridge", 41.0), (10, 0.0): SERVER}, postgres_reaped_s=150.4
    )
    window = CpuWindow(first)
    window.add(middle)
    window.add(last)
    by_database = window.postgres_by_database()
    assert by_database["finance"] == pytest.approx(0.3)
    assert by_database["server"] == pytest.approx(0.0)
    # The 0.1 s it used after the last reading that saw it: counted, apart.
    assert by_database[BETWEEN_READINGS] == pytest.approx(0.1)
    assert all(seconds >= 0 for seconds in by_database.values()), by_database
    assert window.by_process() == pytest.approx({"bridge": 1.0, "postgres": 0.4})


def test_a_backend_started_in_the_window_counts_from_zero_and_a_reused_pid_is_a_new_one() -> None:
    first = CpuReading({(20, 1.0): _backend("bridge", 7.0)}, postgres_reaped_s=0.0)
    window = CpuWindow(first)
    # Pid 20 exited (7.2 s in all) and the kernel gave it to a new backend, started at 9.0.
    window.add(CpuReading({(20, 9.0): _backend("bridge", 0.5)}, postgres_reaped_s=7.2))
    by_database = window.postgres_by_database()
    assert by_database["bridge"] == pytest.approx(0.5)
    assert by_database[BETWEEN_READINGS] == pytest.approx(0.2)


def test_no_database_goes_negative_when_many_backends_exit() -> None:
    # The old split moved an exited backend's whole lifetime to "exited" and took it from its
    # database: the bridge's share went to -12.9 s in a full bench.
    first = CpuReading(
        {(20 + n, 1.0): _backend("bridge", 10.0) for n in range(5)}, postgres_reaped_s=0.0
    )
    window = CpuWindow(first)
    window.add(
        CpuReading({(20 + n, 1.0): _backend("bridge", 10.2) for n in range(5)}, postgres_reaped_s=0)
    )
    window.add(CpuReading({}, postgres_reaped_s=51.0))
    by_database = window.postgres_by_database()
    assert all(seconds >= 0 for seconds in by_database.values()), by_database
    assert by_database["bridge"] == pytest.approx(1.0)
    assert sum(by_database.values()) == pytest.approx(1.0)


def test_a_remote_postgres_has_no_split() -> None:
    window = CpuWindow(CpuReading({(1, 0.0): BRIDGE}))
    window.add(CpuReading({(1, 0.0): ProcessCpu("bridge", 40.5)}))
    assert window.postgres_by_database() == {}
    assert window.by_process() == pytest.approx({"bridge": 0.5})
