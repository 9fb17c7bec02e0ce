"""Starting, watching and stopping the three services as separate processes.

Each service records its own pid and API address in `$DWSIM_HOME/services/<name>.json` once it
listens; the launcher records what it started in `launched.json`, so `dwsim down` stops what
`dwsim up` started and nothing else.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import SecretStr

from infra.processes import pid_alive, read_state, remembered_port, stop_process, write_state
from services.common.settings import SERVICES, Settings

LAUNCHED = "launched.json"
# The web console: started by `dwsim up` beside the services, it has no database of its own.
CONSOLE = "console"


class ServiceStartFailed(RuntimeError):
    """A service process exited or did not become healthy in time."""


@dataclass(frozen=True)
class ServiceStatus:
    """One service as `dwsim status` shows it."""

    name: str
    running: bool
    pid: int | None
    url: str | None

    @property
    def openapi(self) -> str | None:
        """Where the service's OpenAPI page is."""
        return f"{self.url}/docs" if self.url else None


def _state_path(settings: Settings, name: str) -> Path:
    return settings.home / "services" / f"{name}.json"


def log_path(settings: Settings, name: str) -> Path:
    """Where a service started by dwsim writes its log."""
    return settings.home / "logs" / f"{name}.log"


def service_status(settings: Settings, name: str) -> ServiceStatus:
    """Read a service's state file and check that its process lives."""
    try:
        state = read_state(_state_path(settings, name))
    except ValueError:
        # A service writes its state file in place: read between the truncation and the write,
        # it is empty, and the service is not listening yet either.
        state = None
    if state is None or not pid_alive(state.get("pid")):
        return ServiceStatus(name, False, None, None)
    return ServiceStatus(name, True, state["pid"], state["url"])


def console_login_link(settings: Settings) -> str | None:
    """The console's current one-time login link (it makes a new one after each use), or
    None when the console is not running."""
    if not service_status(settings, CONSOLE).running:
        return None
    state = read_state(_state_path(settings, CONSOLE)) or {}
    link = state.get("login_url")
    return str(link) if link else None


def service_url(settings: Settings, name: str) -> str:
    """API address of a running service; raises when it is not running."""
    status = service_status(settings, name)
    if not status.running or status.url is None:
        raise ServiceStartFailed(f"{name} is not running: start it with `dwsim up`")
    return status.url


def settings_environment(settings: Settings) -> dict[str, str]:
    """The settings as `DWSIM_*` variables, so a child process runs with exactly these.

    By alias: a configured token is the field `configured_token_<role>`, read back from
    `DWSIM_TOKEN_<ROLE>`; an unset one is left out, and the child reads the home's file. A
    secret (the SASL password) is passed as itself, not as its masked form.
    """
    return {
        f"DWSIM_{key.upper()}": str(
            value.get_secret_value() if isinstance(value, SecretStr) else value
        )
        for key, value in settings.model_dump(by_alias=True).items()
        if value is not None
    }


def _stable_port(settings: Settings, name: str) -> int:
    """The port the service had before (if still free), else its setting, else a free one."""
    host = getattr(settings, f"{name}_host", settings.api_host)
    return remembered_port(settings.home, name, getattr(settings, f"{name}_port", 0), host)


def start_service(settings: Settings, name: str, deadline_s: float = 60.0) -> ServiceStatus:
    """Start one service unless it runs; wait until its /health answers."""
    current = service_status(settings, name)
    if current.running:
        return current
    _state_path(settings, name).unlink(missing_ok=True)
    log = log_path(settings, name)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **settings_environment(settings)}
    # A restarted service keeps its address, so open API pages and clients still work.
    env[f"DWSIM_{name.upper()}_PORT"] = str(_stable_port(settings, name))
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    launched = read_state(settings.home / LAUNCHED) or {}
    launched[name] = proc.pid
    write_state(settings.home / LAUNCHED, launched)
    return wait_healthy(settings, name, proc, deadline_s)


def wait_healthy(
    settings: Settings, name: str, proc: subprocess.Popen[bytes] | None, deadline_s: float
) -> ServiceStatus:
    """Poll the service's /health until it answers 200, its process dies, or the deadline."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise ServiceStartFailed(
                f"{name} exited with code {proc.returncode}; see {log_path(settings, name)}"
            )
        status = service_status(settings, name)
        if status.running and status.url:
            try:
                if httpx.get(f"{status.url}/health", timeout=2).status_code == 200:
                    return status
            except httpx.HTTPError:
                pass
        time.sleep(0.1)
    raise ServiceStartFailed(
        f"{name} not healthy after {deadline_s:.0f} s; see {log_path(settings, name)}"
    )


def stop_service(settings: Settings, name: str, kill: bool = False) -> bool:
    """Stop a service dwsim started (SIGTERM, or SIGKILL when `kill`); True if it ran."""
    launched = read_state(settings.home / LAUNCHED) or {}
    pid = launched.pop(name, None)
    state = read_state(_state_path(settings, name))
    if pid is None and state is not None:
        pid = state.get("pid")
    if pid is None or not pid_alive(pid):
        write_state(settings.home / LAUNCHED, launched)
        return False
    if kill:
        import signal

        os.kill(pid, signal.SIGKILL)
        stop_process(pid, deadline_s=5)
    else:
        stop_process(pid, deadline_s=15)
    _state_path(settings, name).unlink(missing_ok=True)
    write_state(settings.home / LAUNCHED, launched)
    return True


def start_all(settings: Settings, names: tuple[str, ...] = SERVICES) -> list[ServiceStatus]:
    """Start the services (each waits for health); returns their status."""
    return [start_service(settings, name) for name in names]


def stop_all(settings: Settings, names: tuple[str, ...] = SERVICES) -> list[str]:
    """Stop the services dwsim started; returns the names stopped."""
    return [name for name in names if stop_service(settings, name)]
