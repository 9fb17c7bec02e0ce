"""Each service role reaches only its own database, and only with its password."""

from __future__ import annotations

import asyncpg
import pytest

from services.common.settings import Settings

pytestmark = pytest.mark.integration


def _url_for(settings: Settings, role: str, database: str, password: str | None = None) -> str:
    url = settings.service_database_url(role)
    base, _ = url.rsplit("/", 1)
    if password is not None:
        base = base.replace(settings.secrets()[role], password)
    return f"{base}/{database}"


async def test_service_role_connects_to_its_own_database(settings: Settings) -> None:
    conn = await asyncpg.connect(_url_for(settings, "finance", "finance"))
    try:
        assert await conn.fetchval("SELECT current_user || '@' || current_database()") == (
            "finance@finance"
        )
    finally:
        await conn.close()


@pytest.mark.parametrize("database", ["dataverse", "bridge", "postgres", "template1"])
async def test_service_role_cannot_connect_to_another_database(
    settings: Settings, database: str
) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="CONNECT"):
        await asyncpg.connect(_url_for(settings, "finance", database))


async def test_wrong_password_is_refused(settings: Settings) -> None:
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(_url_for(settings, "finance", "finance", password="wrong"))
