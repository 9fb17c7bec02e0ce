"""Fixtures of the Dataverse service tests: the service running in-process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from services.common.db import create_pool, migrate_service
from services.common.outbox import OutboxRelay
from services.common.settings import Settings
from services.dataverse.__main__ import MIGRATIONS
from services.dataverse.api import build_app
from tests.integration.dataverse.service_under_test import DataverseUnderTest, bearer


@pytest.fixture
async def dataverse(settings: Settings) -> AsyncIterator[DataverseUnderTest]:
    """The service on a fresh database and the test's topics; its relay runs, its consumer
    starts on demand (`start_consumer`), since joining a group costs a couple of seconds."""
    pool = await create_pool(settings.service_database_url("dataverse"))
    await migrate_service(pool, "dataverse", MIGRATIONS)
    app = build_app()
    relay = OutboxRelay(pool, settings, "dataverse")
    app.state.pool = pool
    app.state.settings = settings
    app.state.service_name = "dataverse"
    app.state.relay = relay
    app.state.consumer = None
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://dataverse.test",
        headers=bearer(settings.token_project_manager),
    ) as client:
        service = DataverseUnderTest(
            app=app, client=client, pool=pool, settings=settings, relay=relay
        )
        service.tasks.append(asyncio.create_task(relay.run()))
        try:
            yield service
        finally:
            await service.stop()
            await pool.close()
