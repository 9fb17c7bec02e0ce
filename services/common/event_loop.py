"""The event loop every service runs on.

uvloop (libuv) in place of the standard library's loop: a database round trip, a fetch and an
HTTP request are each a handful of callbacks and socket reads in the loop's own machinery,
which uvloop runs in C. Measured alone, a pooled transaction (BEGIN, a statement, COMMIT) cost
92–98 µs of the client's user CPU against 126–156 µs on asyncio's loop (the commit that
adopted uvloop has the measurement).
"""

from __future__ import annotations

import asyncio

import uvloop


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop of the kind the services run on."""
    return uvloop.new_event_loop()
