"""`python -m services.dataverse`: migrations, API, outbox relay and the accounting consumer."""

from __future__ import annotations

from pathlib import Path

from services.common.service import ServiceDefinition, main
from services.dataverse.api import build_app
from services.dataverse.handlers import subscriptions

MIGRATIONS = Path(__file__).parent / "migrations"

DEFINITION = ServiceDefinition(
    name="dataverse",
    migrations=MIGRATIONS,
    build_app=build_app,
    subscriptions=subscriptions,
)

if __name__ == "__main__":
    main(DEFINITION)
