"""Starting, watching and stopping the three services as separate processes.

Each service records its own pid and API address in `$DWSIM_HOME/services/<name>.json` once it
listens; the launcher records what it started in `launched.json`, so `dwsim down` stops what
`dwsim up` started and nothing else.

A service can run as several instances against the same database and topics (`instances`
setting): the first is named as the service (`bridge`), the others `bridge-2`, `bridge-3`, ...
An extra instance runs with a home of its own (`$DWSIM_HOME/instances/bridge-2`), so its state
file and the bridge's faust data do not collide with the first's, and is told the broker,
its database and the tokens of this home explicitly; its log is `logs/bridge-2.log` beside the
others.
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
from services.common.settings import ROLES, SERVICES, Settings

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


def instance_name(service: str, n: int) -> str:
    """The name of a service's `n`th instance: the service's own for the first."""
    return service if n == 1 else f"{service}-{n}"


def split_instance(name: str) -> tuple[str, int]:
    """`bridge-2` as ("bridge", 2), `bridge` as ("bridge", 1)."""
    service, _, n = name.rpartition("-")
    if service and n.isdigit():
        return service, int(n)
    return name, 1


def instance_home(settings: Settings, name: str) -> Path:
    """The home of an extra instance (the first one's is the stack's home)."""
    return settings.home / "instances" / name


def _state_path(settings: Settings, name: str) -> Path:
    service, n = split_instance(name)
    home = settings.home if n == 1 else instance_home(settings, name)
    return home / "services" / f"{service}.json"


def instances_of(settings: Settings, service: str) -> list[str]:
    """The names of a service's instances this home knows: the first, those the settings ask
    for, and every extra one that has left a state file (running, or killed), in order."""
    found = {
        split_instance(path.parent.parent.name)[1]
        for path in (settings.home / "instances").glob(f"{service}-*/services/{service}.json")
        if split_instance(path.parent.parent.name)[0] == service
    }
    wanted = range(1, settings.instance_counts().get(service, 1) + 1)
    return [instance_name(service, n) for n in sorted({*wanted, *found})]


def live_instances(settings: Settings, service: str) -> list[ServiceStatus]:
    """The instances of a service whose process lives, first instance first."""
    statuses = (service_status(settings, name) for name in instances_of(settings, service))
    return [s for s in statuses if s.running and s.url]


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


def serving_instance(settings: Settings, name: str) -> ServiceStatus:
    """The instance that answers for `name`: a service's first live instance, or the named
    instance (`bridge-2`); raises when none runs."""
    service, n = split_instance(name)
    if n == 1 and service in SERVICES:
        live = live_instances(settings, service)
        if live:
            return live[0]
    status = service_status(settings, name)
    if not status.running or status.url is None:
        raise ServiceStartFailed(f"{name} is not running: start it with `dwsim up`")
    return status


def service_url(settings: Settings, name: str) -> str:
    """API address of a running service (see `serving_instance`); raises when none runs."""
    url = serving_instance(settings, name).url
    assert url is not None  # a running instance has recorded its address
    return url


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


def _instance_environment(settings: Settings, name: str) -> dict[str, str]:
    """What an instance's process runs with: the settings, its port, and for an extra
    instance its own home plus what it would otherwise read from the stack's home."""
    service, n = split_instance(name)
    env = {**os.environ, **settings_environment(settings)}
    if n == 1:
        # A restarted service keeps its address, so open API pages and clients still work.
        env[f"DWSIM_{service.upper()}_PORT"] = str(_stable_port(settings, service))
        return env
    home = instance_home(settings, name)
    home.mkdir(parents=True, exist_ok=True)
    host = getattr(settings, f"{service}_host", settings.api_host)
    return {
        **env,
        "DWSIM_HOME": str(home),
        "DWSIM_KAFKA_BOOTSTRAP": settings.bootstrap_servers(),
        f"DWSIM_{service.upper()}_DATABASE_URL": settings.service_database_url(service),
        # The service's port setting is the first instance's; this one keeps its own.
        f"DWSIM_{service.upper()}_PORT": str(remembered_port(settings.home, name, 0, host)),
        **{f"DWSIM_TOKEN_{role.upper()}": settings.role_token(role) for role in ROLES},
    }


def launch_instance(settings: Settings, name: str) -> subprocess.Popen[bytes]:
    """Start one instance's process (`bridge`, `bridge-2`, ...) without waiting for it, and
    record it as launched; its output goes to `log_path(settings, name)`."""
    service, _ = split_instance(name)
    _state_path(settings, name).unlink(missing_ok=True)
    log = log_path(settings, name)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = _instance_environment(settings, name)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{service}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    launched = read_state(settings.home / LAUNCHED) or {}
    launched[name] = proc.pid
    write_state(settings.home / LAUNCHED, launched)
    return proc


def start_service(settings: Settings, name: str, deadline_s: float = 60.0) -> ServiceStatus:
    """Start one service, or one instance of it (`bridge-2`), unless it runs; wait until its
    /health answers."""
    current = service_status(settings, name)
    if current.running:
        return current
    proc = launch_instance(settings, name)
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


def forget_instance(settings: Settings, name: str) -> None:
    """Remove a stopped extra instance's state file (a SIGKILLed one leaves it behind), so
    `instances_of` lists it no more."""
    if split_instance(name)[1] > 1 and not service_status(settings, name).running:
        _state_path(settings, name).unlink(missing_ok=True)


def start_all(settings: Settings, names: tuple[str, ...] = SERVICES) -> list[ServiceStatus]:
    """Start the services (each waits for health); returns their status."""
    return [start_service(settings, name) for name in names]


def stop_all(settings: Settings, names: tuple[str, ...] = SERVICES) -> list[str]:
    """Stop the services dwsim started; returns the names stopped."""
    return [name for name in names if stop_service(settings, name)]
