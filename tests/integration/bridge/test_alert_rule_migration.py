"""A bridge database seeded before alert rules named an error type gets the typed rule."""

from __future__ import annotations

import shutil
from pathlib import Path

import asyncpg
import pytest

from services.bridge.commands import MAP_SLUGS
from services.bridge.handlers import seed
from services.bridge.stream_app import MIGRATIONS
from services.common.db import create_pool, migrate_service
from services.common.settings import Settings

pytestmark = pytest.mark.integration


async def test_the_seeded_any_rule_becomes_a_time_out_rule_and_any_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    before = tmp_path / "migrations"
    before.mkdir()
    for path in sorted(MIGRATIONS.glob("*.sql")):
        if int(path.name.split("_", 1)[0]) < 3:
            shutil.copy(path, before)
    pool = await create_pool(settings.service_database_url("bridge"))
    try:
        await migrate_service(pool, "bridge", before)
        async with pool.acquire() as conn:
            await conn.executemany(
                "INSERT INTO bridge_map (name, slug, version, state) "
                "VALUES ($1, $2, '1.0', 'running')",
                list(MAP_SLUGS.items()),
            )
            # The rule every map was seeded with: 10 errors of any type in 15 minutes → pause.
            await conn.execute(
                "INSERT INTO bridge_alert_rule (map_name, error_type, error_count, window_s, "
                "action, last_fired_at) SELECT name, 'any', 10, 900, 'pause', now() "
                "FROM bridge_map"
            )
        await migrate_service(pool, "bridge", MIGRATIONS)
        await seed(pool)  # as every start does: finds the typed rule there already
        async with pool.acquire() as conn:
            rules = await conn.fetch(
                "SELECT error_type, error_count, window_s, action, last_fired_at "
                "FROM bridge_alert_rule ORDER BY map_name"
            )
            assert [tuple(r) for r in rules] == [("timeout", 10, 900.0, "pause", None)] * 2
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute(
                    "INSERT INTO bridge_alert_rule (map_name, error_type, error_count, "
                    "window_s, action) SELECT name, 'any', 5, 60, 'notify' FROM bridge_map"
                )
    finally:
        await pool.close()
