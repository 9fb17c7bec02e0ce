"""The local PostgreSQL: the server settings dwsim's load needs, starting over empty, and an
unreachable one named with what to check."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from infra import postgres
from infra.errors import InfraError
from infra.postgres import SERVER_SETTINGS
from services.common.settings import Settings

pytestmark = pytest.mark.integration


async def test_local_postgres_runs_with_dwsim_server_settings(settings: Settings) -> None:
    if settings.database_url:
        pytest.skip("a PostgreSQL configured with DWSIM_DATABASE_URL keeps its own settings")
    conn = await asyncpg.connect(settings.service_database_url("finance"))
    try:
        shown = {name: await conn.fetchval(f"SHOW {name}") for name in SERVER_SETTINGS}
    finally:
        await conn.close()
    assert shown == SERVER_SETTINGS


async def _fetch(settings: Settings, sql: str) -> object:
    conn = await asyncpg.connect(settings.admin_database_url())
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def test_removing_the_data_starts_an_empty_postgres_next_time(tmp_path: Path) -> None:
    # What `dwsim bench` does before every run, on a PostgreSQL of this test's own.
    own = Settings(home=tmp_path, database_url=None)
    try:
        postgres.start(own)
        asyncio.run(_fetch(own, "CREATE TABLE left_by_an_earlier_run (id int)"))

        assert postgres.remove_data(own)
        assert not postgres.status(own).running

        postgres.start(own)
        assert asyncio.run(_fetch(own, "SELECT to_regclass('left_by_an_earlier_run')")) is None
    finally:
        postgres.stop(own)


def test_a_configured_postgres_is_never_removed(tmp_path: Path) -> None:
    elsewhere = Settings(home=tmp_path, database_url="postgresql://127.0.0.1:1/postgres")
    assert not postgres.remove_data(elsewhere)


def test_an_unreachable_configured_postgres_says_what_to_check(tmp_path: Path) -> None:
    elsewhere = Settings(
        home=tmp_path, database_url="postgresql://admin:s3cret@127.0.0.1:1/postgres"
    )
    with pytest.raises(InfraError, match="DWSIM_DATABASE_URL") as refused:
        postgres.provision(elsewhere)
    assert "postgresql://***@127.0.0.1:1/postgres" in str(refused.value)
    assert "s3cret" not in str(refused.value)
