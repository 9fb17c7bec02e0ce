"""Ports, pids and state files of the local servers: the part broker and database share."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import psutil

from infra.errors import PortInUse
from services.common.ports import free_port


def ensure_port_free(port: int, what: str, setting: str, host: str = "127.0.0.1") -> None:
    """Raise PortInUse, naming the holder if we can see it, when `port` is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            return
        except OSError:
            pass
    holder = ""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                if conn.pid:
                    holder = f" by pid {conn.pid} ({psutil.Process(conn.pid).name()})"
                break
    except (psutil.Error, OSError):
        pass
    raise PortInUse(
        f"{what}: port {port} on {host} is already in use{holder}; "
        f"set {setting} to another port, or 0 to pick a free one"
    )


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on the port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int | None) -> bool:
    """True when the process exists and is not a zombie."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def stop_process(pid: int, deadline_s: float = 10.0) -> None:
    """SIGTERM, wait for the exit until the deadline, then SIGKILL and wait again.

    Waiting for the exit matters: the default broker crashes when a new one binds the port
    before the old one has gone.
    """
    if not pid_alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if _wait_gone(pid, deadline_s):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _wait_gone(pid, 5.0)


def _wait_gone(pid: int, deadline_s: float) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not pid_alive(pid):
            # Reap it if it is our child, so it does not linger as a zombie.
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


def write_state(path: Path, data: dict[str, Any]) -> None:
    """Write a state file atomically, readable only by its owner."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    # Created 0600, not chmod-ed after writing: passwords and tokens are never readable by
    # others, not even for a moment.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(data, indent=2))
    os.replace(tmp, path)


def read_state(path: Path) -> dict[str, Any] | None:
    """A state file's content, or None."""
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def remembered_port(home: Path, name: str, configured: int, host: str = "127.0.0.1") -> int:
    """The configured port; else the one `name` had last time, if free; else a free one.

    Keeping the port across a restart matters: clients (the services, a user's tools) hold the
    address, and a broker restarted elsewhere would leave them talking to nothing.
    """
    if configured:
        return configured
    path = home / "ports.json"
    ports = read_state(path) or {}
    port = ports.get(name)
    if port is None or port_open(int(port), host):
        port = free_port(host)
        ports[name] = port
        write_state(path, ports)
    return int(port)
