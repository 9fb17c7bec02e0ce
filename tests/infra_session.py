"""The real broker and PostgreSQL for a test session: started here unless configured."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from infra import broker, postgres, tokens, topics
from infra.processes import pid_alive
from services.common.settings import PROJECT_ROOT, SERVICES, Settings

TEST_HOMES = PROJECT_ROOT / ".dwsim" / "tests"


def _remove_abandoned_homes() -> None:
    """Folders of test sessions that died without cleaning up (their pid is gone)."""
    for home in TEST_HOMES.glob("session-*"):
        pid = int(home.name.removeprefix("session-"))
        if not pid_alive(pid):
            stale = Settings(home=home)
            postgres.stop(stale)
            broker.stop(stale)
            shutil.rmtree(home, ignore_errors=True)


@contextmanager
def test_infrastructure() -> Iterator[Settings]:
    """Start what is not configured, in a folder of this session, and stop what was started.

    Each session has its own folder, ports and servers, so two test runs side by side (two
    developers, or a developer and CI) never stop each other's servers.
    """
    own_home = not os.environ.get("DWSIM_HOME")
    if own_home:
        _remove_abandoned_homes()
        os.environ["DWSIM_HOME"] = str(TEST_HOMES / f"session-{os.getpid()}")
    settings = Settings()
    # The services and the tests read the roles' bearer tokens from the session's home.
    tokens.ensure_tokens(settings)
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
        if own_home:
            shutil.rmtree(settings.home, ignore_errors=True)


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
            name = settings.service_database(service)
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
    await postgres.provision_async(settings)
