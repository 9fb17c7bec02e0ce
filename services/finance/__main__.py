"""`python -m services.finance`: API, outbox relay, consumers and the periodic import."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from services.common.service import ServiceDefinition, Worker, main
from services.common.settings import Settings
from services.finance.api import build_app
from services.finance.handlers import subscriptions
from services.finance.importer import ImportWorker


def workers(pool: asyncpg.Pool, settings: Settings) -> list[Worker]:
    """Finance's own background work: the periodic import from staging."""
    return [ImportWorker(pool, settings)]


DEFINITION = ServiceDefinition(
    name="finance",
    migrations=Path(__file__).parent / "migrations",
    build_app=build_app,
    subscriptions=subscriptions,
    workers=workers,
)

if __name__ == "__main__":
    main(DEFINITION)
