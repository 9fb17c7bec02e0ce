"""The whole local stack — infrastructure and the three services — started and stopped together."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from infra import broker, postgres, topics
from services.common.settings import SERVICES, Settings
from services.simulator.processes import ServiceStatus, service_status, start_service, stop_all


@dataclass(frozen=True)
class Started:
    """What one `bring_up` started, so the matching `take_down` stops just that."""

    broker: bool
    postgres: bool
    services: tuple[str, ...]


def bring_up(settings: Settings) -> tuple[Started, list[ServiceStatus]]:
    """Start what is not running: broker, PostgreSQL, topics, then each service."""
    broker_started = not settings.kafka_bootstrap and not broker.status(settings).running
    pg_started = not settings.database_url and not postgres.status(settings).running
    broker.start(settings)
    postgres.start(settings)
    topics.provision(settings)
    new = tuple(name for name in SERVICES if not service_status(settings, name).running)
    statuses = [start_service(settings, name) for name in SERVICES]
    return Started(broker_started, pg_started, new), statuses


def take_down(settings: Settings, started: Started) -> None:
    """Stop what `bring_up` started, services first."""
    stop_all(settings, started.services)
    if started.postgres:
        postgres.stop(settings)
    if started.broker:
        broker.stop(settings)


@contextmanager
def running_stack(settings: Settings, keep: bool = False) -> Iterator[list[ServiceStatus]]:
    """The stack for the block; stops afterwards what it started unless `keep`."""
    started, statuses = bring_up(settings)
    try:
        yield statuses
    finally:
        if not keep:
            take_down(settings, started)
