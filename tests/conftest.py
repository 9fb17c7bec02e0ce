"""Session-wide fixtures: the real infrastructure, started only when a test asks for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from services.common.settings import Settings
from tests.infra_session import (
    provision_topics,
    reset_service_databases,
    test_infrastructure,
    unique_settings,
)


@pytest.fixture(scope="session")
def infra() -> Iterator[Settings]:
    """The real broker and PostgreSQL (started by this session unless configured)."""
    with test_infrastructure() as settings:
        yield settings


@pytest.fixture
async def settings(infra: Settings) -> AsyncIterator[Settings]:
    """Per-test settings: own topic prefix, topics provisioned, service databases fresh."""
    own = unique_settings(infra)
    await provision_topics(own)
    await reset_service_databases(own)
    yield own
