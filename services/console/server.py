"""Runs the console's HTTP server and records where it listens, as the services do.

The state file (`$DWSIM_HOME/services/console.json`, mode 0600) carries the console's pid and
address and a one-time login link, which `dwsim up` prints; it is removed when the console
stops.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket

import uvicorn

from infra.processes import write_state
from services.common.logging import get_logger
from services.common.service import service_state_file
from services.common.settings import Settings
from services.console.access import Access, OneTimeLogin
from services.console.app import build_app

log = get_logger(__name__)
NAME = "console"


def _bind(host: str, port: int) -> socket.socket:
    # Bound before the state file is written, so the address it records already answers.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve(settings: Settings) -> int:
    """Serve the console until a signal stops it; returns the exit code."""
    sock = _bind(settings.console_host, settings.console_port)
    port = sock.getsockname()[1]
    url = f"http://{settings.console_host}:{port}"
    state_file = service_state_file(settings, NAME)

    def record(login_url: str) -> None:
        write_state(
            state_file, {"pid": os.getpid(), "port": port, "url": url, "login_url": login_url}
        )

    access = Access(settings, OneTimeLogin(url, record))
    app = build_app(settings, access)
    # log_config=None: uvicorn's lines go through the root logger, rendered as ours.
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="off", log_config=None)
    )
    log.info("service_started", url=url)
    try:
        await server.serve(sockets=[sock])
    finally:
        with contextlib.suppress(FileNotFoundError, ValueError):
            if json.loads(state_file.read_text()).get("pid") == os.getpid():
                state_file.unlink()
        log.info("service_stopped")
    return 0
