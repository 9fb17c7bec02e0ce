"""A database prefix gives a second simulation (the bench) databases and roles of its own on
the same PostgreSQL: it never touches another's data or passwords, and can start empty."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest

from infra import postgres
from infra.errors import InfraError
from services.common.settings import SERVICES, Settings

pytestmark = pytest.mark.integration


async def _fetch(url: str, sql: str) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def _drop_everything_of(other: Settings) -> None:
    conn = await asyncpg.connect(other.admin_database_url())
    try:
        for service in SERVICES:
            name = other.service_database(service)
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'DROP ROLE IF EXISTS "{name}"')
    finally:
        await conn.close()


def test_prefixed_databases_are_their_own_and_start_empty(
    settings: Settings, tmp_path: Path
) -> None:
    # The session's PostgreSQL, seen as a configured one by a second simulation in another
    # home, so with passwords of its own: what `dwsim bench` is beside a DWSIM_DATABASE_URL.
    other = Settings(
        home=tmp_path,
        database_url=settings.admin_database_url(),
        database_prefix=f"t{uuid.uuid4().hex[:8]}_",
    )
    try:
        postgres.start(other)
        url = other.service_database_url("finance")
        assert asyncio.run(_fetch(url, "SELECT current_user || '@' || current_database()")) == (
            f"{other.database_prefix}finance@{other.database_prefix}finance"
        )
        asyncio.run(_fetch(url, "CREATE TABLE left_by_an_earlier_run (id int)"))
        # The session's own roles still log in with their passwords: not re-set.
        for service in SERVICES:
            own = settings.service_database_url(service)
            assert asyncio.run(_fetch(own, "SELECT current_database()")) == service

        postgres.start_empty(other)
        postgres.start(other)
        assert asyncio.run(_fetch(url, "SELECT to_regclass('left_by_an_earlier_run')")) is None
        for service in SERVICES:
            own = settings.service_database_url(service)
            assert asyncio.run(_fetch(own, "SELECT current_database()")) == service
    finally:
        asyncio.run(_drop_everything_of(other))


def test_configured_databases_without_a_prefix_are_never_emptied(
    settings: Settings, tmp_path: Path
) -> None:
    other = Settings(home=tmp_path, database_url=settings.admin_database_url())
    with pytest.raises(InfraError, match="without a database prefix"):
        postgres.start_empty(other)
    own = settings.service_database_url("finance")
    assert asyncio.run(_fetch(own, "SELECT current_database()")) == "finance"


@pytest.mark.parametrize("prefix", ["Bench_", "bench-", "1bench_", "bench;drop"])
def test_a_database_prefix_must_be_a_plain_lower_case_name(prefix: str) -> None:
    with pytest.raises(ValueError, match="database_prefix"):
        Settings(database_prefix=prefix)
