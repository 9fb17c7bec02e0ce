"""asyncpg pool and the migrations runner every service uses."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from services.common.errors import MigrationFailed
from services.common.logging import get_logger

log = get_logger(__name__)

# What handlers and repositories receive: a plain connection or one borrowed from a pool.
DbConnection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

# The database is unreachable, or the connection died under the work: the database is down,
# restarting or recovering from a crash. Nothing the work did committed (or, for a COMMIT whose
# answer was lost, all of it did, and the inbox drops the repeat).
CONNECTION_LOST_ERRORS: tuple[type[Exception], ...] = (
    # A connection closed under the caller ("connection is closed"), or a pooled connection
    # whose server went away and was handed back to the pool by asyncpg itself.
    asyncpg.InterfaceError,
    # SQLSTATE class 08: the connection failed, was refused, or died; or the outcome of a
    # COMMIT is unknown.
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.ConnectionFailureError,
    asyncpg.ClientCannotConnectError,
    asyncpg.ConnectionRejectionError,
    asyncpg.TransactionResolutionUnknownError,
    # 57P01-57P03: the server is shutting down (fast or immediate), another backend crashed,
    # or the server is starting up or recovering from a crash.
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    # Every service reconnecting at once after a restart may meet max_connections.
    asyncpg.TooManyConnectionsError,
    # asyncpg's own protocol state broken by a connection lost in the middle of a statement:
    # the bridge met "cannot switch to state 15; another operation (2) is in progress" on a
    # SIGKILL of the postmaster (issue 18), from the ROLLBACK of the transaction that lost it.
    asyncpg.InternalClientError,
    # Refused, reset or aborted sockets.
    ConnectionError,
    # The classes the ones above belong to, for their other members: any connection failure
    # (08), any operator intervention (57: a statement cancelled with a shutdown), a server
    # out of resources (53: disk full, out of memory). None says anything about the work.
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)

# What asyncpg raises as an InterfaceError although no connection was lost: the call itself
# is wrong (a parameter it cannot encode, such as an integer out of int64 range, is a
# ValueError; so is a bad connection setting).
_CALL_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    asyncpg.UnsupportedClientFeatureError,
    asyncpg.UnsupportedServerFeatureError,
)


def connection_lost(exc: BaseException) -> bool:
    """Whether `exc` says the database is unreachable or the connection died under the work."""
    return isinstance(exc, CONNECTION_LOST_ERRORS) and not isinstance(exc, _CALL_ERRORS)


# Failures that say nothing about the event being applied: the database is unreachable, or
# the transaction lost a race. The work is retried; an event is never parked for them.
TRANSIENT_DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    *CONNECTION_LOST_ERRORS,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    # A handler that locks with NOWAIT met a row another transaction holds: try again later.
    asyncpg.LockNotAvailableError,
    # Any other socket failure, and timeouts (TimeoutError is an OSError).
    OSError,
)


def is_transient(exc: BaseException) -> bool:
    """Whether the work that raised `exc` should be retried as it is (the database away, a
    lost race) rather than blamed on its input. Not a call asyncpg refused before sending it
    (an integer out of int64 range is a DataError that is also an InterfaceError): retried,
    that batch would fail the same way forever."""
    return isinstance(exc, TRANSIENT_DATABASE_ERRORS) and not isinstance(exc, _CALL_ERRORS)


COMMON_MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d+)_[\w-]+\.sql$")
# One arbitrary, fixed key: two processes of one service starting together migrate in turn.
_MIGRATION_LOCK = 7_261_001


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection goes through on its way back to the pool, after asyncpg has rolled
    back any open transaction: nothing more.

    asyncpg's default runs `RESET ALL; UNLISTEN *; CLOSE ALL; pg_advisory_unlock_all()`: one
    more round trip, waking the server process once more, on every request and every consumed
    batch. The services leave no session state on a pooled connection: no SET, no cursor
    outside a transaction; what takes an advisory lock or listens (the outbox relay's leader,
    the migrations) uses `session_connection`.
    """


class _LostConnectionWithoutTraceback(logging.Filter):
    """asyncpg's pool retries its floor connection while the database is away (backing off
    up to a minute) and logs a traceback each time: one line says it as well."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and connection_lost(exc):
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {exc}"
            record.args = None
            record.exc_info = None
        return True


_POOL_LOG_FILTER = _LostConnectionWithoutTraceback()


async def create_pool(url: str, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections encode and decode json/jsonb as Python values."""
    logging.getLogger("asyncpg.pool").addFilter(_POOL_LOG_FILTER)  # once: filters are a set
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        timeout=30,
    )
    assert pool is not None
    return pool


@asynccontextmanager
async def session_connection(pool: asyncpg.Pool) -> AsyncIterator[DbConnection]:
    """A pooled connection for work that leaves session state behind (advisory locks,
    LISTEN): closed afterwards instead of returned, so that state ends with it however the
    work ended, cancellation included (the pool's reset does not undo it)."""
    async with pool.acquire() as conn:
        try:
            yield conn
        finally:
            # A connection lost with its server is already closed and handed back to the
            # pool by asyncpg, and calling it raises: its session state ended with it.
            if session_alive(conn):
                conn.terminate()


def session_alive(conn: DbConnection) -> bool:
    """Whether a connection still holds its session (a local check, no round trip): False
    once asyncpg has seen the server close it, whatever the caller does with it."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:  # a pooled connection asyncpg released when it was lost
        return False


class DatabaseStatus:
    """Whether a process reaches its database, as its workers last found: what `/health`
    reports and what the logs say when it changes.

    Every worker that retries after a lost connection calls `failed`, and `reachable` after
    work that succeeded; the first failure of an outage and the recovery are logged once each
    for the whole process, the retries by each worker.
    """

    def __init__(self) -> None:
        self.up = True
        self.since = datetime.now(UTC)
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.failed_attempts = 0
        self.outages = 0

    def failed(self, exc: BaseException, where: str) -> None:
        """Work in `where` failed for a transient reason; only a lost or refused connection
        (not a lost race, which says nothing of reachability) counts."""
        if not connection_lost(exc):
            return
        now = datetime.now(UTC)
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.last_error_at = now
        self.failed_attempts += 1
        if self.up:
            self.up = False
            self.since = now
            self.outages += 1
            log.error("database_unreachable", where=where, error=self.last_error)

    def reachable(self) -> None:
        """Work against the database succeeded."""
        if self.up:
            return
        now = datetime.now(UTC)
        log.warning(
            "database_reachable_again",
            down_for_s=round((now - self.since).total_seconds(), 1),
            failed_attempts=self.failed_attempts,
        )
        self.up = True
        self.since = now
        self.failed_attempts = 0

    def as_dict(self) -> dict[str, Any]:
        """As `/health` shows it."""
        return {
            "state": "up" if self.up else "down",
            "since": self.since.isoformat(),
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
            "failed_attempts": self.failed_attempts,
            "outages": self.outages,
        }


# asyncpg's Pool takes no attributes and no weak references: the status of each pool a
# process opened (one per service process, a few in a test session) is kept here.
_STATUS_OF_POOL: dict[asyncpg.Pool, DatabaseStatus] = {}


def database_status(pool: asyncpg.Pool) -> DatabaseStatus:
    """The one status of this pool's database, shared by every worker using the pool."""
    return _STATUS_OF_POOL.setdefault(pool, DatabaseStatus())


def migration_files(folder: Path) -> list[Path]:
    """Numbered SQL files of a folder in order; a misnamed .sql file is an error."""
    files = []
    for path in sorted(folder.glob("*.sql")):
        if not _MIGRATION_NAME.match(path.name):
            raise MigrationFailed(str(path), ValueError("name must be NNN_description.sql"))
        files.append(path)
    return sorted(files, key=lambda p: int(p.name.split("_", 1)[0]))


async def migrate(conn: DbConnection, scope: str, folder: Path) -> list[str]:
    """Apply the folder's migrations not yet recorded for `scope`; returns the names applied.

    Each file runs in its own transaction with its record, so a failing file leaves nothing
    behind and aborts with its name; the files before it stay applied.
    """
    await conn.execute(
        """
        CREATE TABLE IF NOT EXISTS dwsim_schema_migration (
            scope text NOT NULL,
            version integer NOT NULL,
            name text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (scope, version)
        )
        """
    )
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        done = {
            r["version"]
            for r in await conn.fetch(
                "SELECT version FROM dwsim_schema_migration WHERE scope = $1", scope
            )
        }
        for path in migration_files(folder):
            version = int(path.name.split("_", 1)[0])
            if version in done:
                continue
            try:
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute(
                        "INSERT INTO dwsim_schema_migration (scope, version, name) "
                        "VALUES ($1, $2, $3)",
                        scope,
                        version,
                        path.name,
                    )
            except (asyncpg.PostgresError, OSError) as exc:
                raise MigrationFailed(f"{scope}/{path.name}", exc) from exc
            log.info("migration_applied", scope=scope, migration=path.name)
            applied.append(path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied


async def migrate_service(pool: asyncpg.Pool, service: str, folder: Path) -> list[str]:
    """The shared tables (outbox, inbox, parked events) first, then the service's own."""
    async with session_connection(pool) as conn:
        applied = await migrate(conn, "common", COMMON_MIGRATIONS)
        applied += await migrate(conn, service, folder)
    return applied


def record_to_dict(record: asyncpg.Record | None) -> dict[str, Any] | None:
    """A row as a plain dict (or None)."""
    return dict(record) if record is not None else None
