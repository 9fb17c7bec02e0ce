"""asyncpg pool and the migrations runner every service uses."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

from services.common.errors import MigrationFailed
from services.common.logging import get_logger

log = get_logger(__name__)

# What handlers and repositories receive: a plain connection or one borrowed from a pool.
DbConnection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

# Failures that say nothing about the event being applied: the database is unreachable, or
# the transaction lost a race. The work is retried; an event is never parked for them.
TRANSIENT_DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.InterfaceError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    # A handler that locks with NOWAIT met a row another transaction holds: try again later.
    asyncpg.LockNotAvailableError,
    OSError,
)

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


async def create_pool(url: str, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections encode and decode json/jsonb as Python values."""
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
            conn.terminate()


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
