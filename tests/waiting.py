"""Waiting on conditions with deadlines: the only way tests wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def wait_for(
    condition: Callable[[], Awaitable[bool]], deadline_s: float = 30.0, what: str = "condition"
) -> None:
    """Poll until the condition holds; fail naming `what` at the deadline."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {deadline_s:.0f} s waiting for {what}")


def holds(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """Turn a plain check into a condition for `wait_for`."""

    async def condition() -> bool:
        return check()

    return condition
