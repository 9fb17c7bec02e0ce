"""The event loop every service runs on.

uvloop (libuv) in place of the standard library's loop: each service spends much of its time
in the loop's own machinery (a database round trip, a fetch and an HTTP request are each a
handful of callbacks and socket reads), which uvloop runs in C. Measured in `make bench`.
"""

from __future__ import annotations

import asyncio

import uvloop


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop of the kind the services run on."""
    return uvloop.new_event_loop()
