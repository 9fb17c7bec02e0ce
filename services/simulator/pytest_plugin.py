"""dwsim's pytest plugin, registered through the `pytest11` entry point: installing dwsim is
enough for a test (no conftest.py) to ask for the simulated integration.

Fixtures:
- `dwsim_stack` (session): broker, PostgreSQL and the three services, started once in a home
  of their own (or on the servers of `DWSIM_KAFKA_BOOTSTRAP` / `DWSIM_DATABASE_URL`) and stopped
  after the last test; topic names and the bootstrap address for your own Kafka clients.
- `dwsim` (per test, async): builders, waits with deadlines, faults and `assert_reconciled()`
  over the test's own legal entities (see `services/simulator/harness.py`).
- `dwsim_settings_overrides` (session): override it in your conftest to change settings of the
  started stack, e.g. `{"receipt_timeout_s": 3.0}`.

Nothing starts unless a test asks for one of these fixtures, and the plugin imports the
harness only then, so a test run that does not use it pays nothing.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from services.simulator.harness import DwsimStack, DwsimTest

try:  # the async `dwsim` fixture needs pytest-asyncio (the `testing` extra installs it)
    import pytest_asyncio
except ImportError:  # pragma: no cover - depends on the user's environment
    pytest_asyncio = None  # type: ignore[assignment]

# Wall-clock instants of this pytest process, for the closing summary.
_figures: dict[str, Any] = {}


@pytest.fixture(scope="session")
def dwsim_settings_overrides() -> dict[str, object]:
    """Settings of the stack `dwsim_stack` starts (none: the defaults); override in conftest."""
    return {}


@pytest.fixture(scope="session")
def dwsim_stack(dwsim_settings_overrides: dict[str, object]) -> Iterator[DwsimStack]:
    """The simulated integration for the whole session: started once, stopped after."""
    from services.simulator.harness import DwsimStack

    stack = DwsimStack.start(dwsim_settings_overrides)
    _figures["stack"] = stack
    try:
        yield stack
    finally:
        stack.stop()


if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def dwsim(dwsim_stack: DwsimStack) -> AsyncIterator[DwsimTest]:
        """One test's part of the stack: its own legal entities, clients, faults; what a fault
        left down is put back after the test."""
        async with dwsim_stack.test() as one:
            yield one

else:  # pragma: no cover

    @pytest.fixture
    def dwsim() -> None:
        """Needs pytest-asyncio."""
        pytest.fail("the dwsim fixture needs pytest-asyncio: pip install 'dwsim[testing]'")


def _process_age_s() -> float:
    """Seconds since this pytest process started (interpreter start included)."""
    import psutil

    return float(time.time() - psutil.Process().create_time())


def pytest_sessionstart(session: pytest.Session) -> None:
    """Note when pytest is ready to collect (interpreter and plugins loaded)."""
    _figures["session_start_s"] = _process_age_s()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    """Note when the first test using the stack runs (after its fixtures, the stack's start
    among them)."""
    if "first_test_s" not in _figures and "dwsim_stack" in getattr(item, "fixturenames", ()):
        _figures["first_test_s"] = _process_age_s()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """When the stack was used: how long until the first test ran, and what isolation cost."""
    stack = _figures.get("stack")
    if stack is None:
        return
    timings = stack.timings
    lines = [
        f"first test using the stack ran {_figures.get('first_test_s', 0.0):.1f} s after pytest "
        f"started (pytest ready to collect at {_figures.get('session_start_s', 0.0):.1f} s; "
        f"the stack's start took {timings.stack_start_s:.1f} s)"
    ]
    if timings.isolation_s:
        iso = sorted(timings.isolation_s)
        lines.append(
            f"per-test isolation (own legal entity, then faults put back): mean "
            f"{1000 * sum(iso) / len(iso):.0f} ms, max {1000 * iso[-1]:.0f} ms over {len(iso)} "
            "tests"
        )
    if timings.reconcile_s:
        rec = sorted(timings.reconcile_s)
        lines.append(
            f"scoped reconciliation: mean {1000 * sum(rec) / len(rec):.0f} ms, max "
            f"{1000 * rec[-1]:.0f} ms"
        )
    terminalreporter.write_sep("-", "dwsim")
    for line in lines:
        terminalreporter.write_line(line)
