"""Waiting on a condition with a deadline: the one way the simulator, its scenarios and the
pytest plugin wait for the integration (never a bare sleep)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from services.common.errors import DwsimError

T = TypeVar("T")


class DeadlinePassed(DwsimError, AssertionError):
    """A condition did not hold before its deadline; the message says what was awaited.

    An AssertionError too, so that pytest shows it as a failed expectation, not a crash.
    """


async def until(
    check: Callable[[], Awaitable[T | None]],
    what: str,
    deadline_s: float,
    poll_s: float = 0.25,
    last_seen: Callable[[], str] | None = None,
) -> T:
    """The first truthy value of `check()`, polled until the deadline; else DeadlinePassed.

    `last_seen`, when given, describes the last state observed, for the failure message.
    """
    end = time.monotonic() + deadline_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > end:
            seen = f"; last seen: {last_seen()}" if last_seen else ""
            raise DeadlinePassed(f"timed out after {deadline_s:.0f} s waiting for {what}{seen}")
        await asyncio.sleep(poll_s)
