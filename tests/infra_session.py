"""The real broker and PostgreSQL for a test session: started here unless configured."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from infra import broker, postgres, topics
from services.common.settings import PROJECT_ROOT, SERVICES, Settings

TEST_HOME = PROJECT_ROOT / ".dwsim" / "test"


@contextmanager
def test_infrastructure() -> Iterator[Settings]:
    """Start what is not configured, in its own folder, and stop what was started."""
    if not os.environ.get("DWSIM_HOME"):
        os.environ["DWSIM_HOME"] = str(TEST_HOME)
    settings = Settings()
    started_broker = started_pg = False
    if not settings.kafka_bootstrap:
        broker.stop(settings)
        broker.start(settings)
        started_broker = True
    if not settings.database_url:
        postgres.stop(settings)
        shutil.rmtree(settings.home / "postgres", ignore_errors=True)
    postgres.start(settings)
    started_pg = not settings.database_url
    try:
        yield settings
    finally:
        if started_pg:
            postgres.stop(settings)
        if started_broker:
            broker.stop(settings)


def unique_settings(base: Settings, **overrides: object) -> Settings:
    """Settings with a topic prefix of their own, so tests never read each other's events."""
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    values = {"topic_prefix": prefix, **overrides}
    return base.model_copy(update=values)


async def provision_topics(settings: Settings) -> None:
    """Create the test's topics."""
    await topics.provision_async(settings)


async def reset_service_databases(settings: Settings, *services: str) -> None:
    """Drop and recreate service databases, so a test starts from nothing."""
    conn = await asyncpg.connect(settings.admin_database_url())
    try:
        for service in services or SERVICES:
            await conn.execute(f'DROP DATABASE IF EXISTS "{service}" WITH (FORCE)')
    finally:
        await conn.close()
    await postgres.provision_async(settings)
