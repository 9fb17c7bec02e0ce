"""The whole local stack — infrastructure and the three services — started and stopped together."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from infra import broker, postgres, tokens, topics
from infra.processes import read_state, write_state
from services.common.settings import SERVICES, Settings
from services.simulator.processes import (
    CONSOLE,
    ServiceStatus,
    instance_name,
    instances_of,
    service_status,
    split_instance,
    start_service,
    stop_all,
)


@dataclass(frozen=True)
class Started:
    """What one `bring_up` started, so the matching `take_down` stops just that."""

    broker: bool
    postgres: bool
    services: tuple[str, ...]


def instance_names(settings: Settings) -> tuple[str, ...]:
    """Every service instance the settings ask for (`instances`), first instances first: the
    extra ones start once each service's first has migrated its database."""
    counts = settings.instance_counts()
    extra = tuple(
        instance_name(service, n) for service in SERVICES for n in range(2, counts[service] + 1)
    )
    return (*SERVICES, *extra)


def bring_up(settings: Settings, console: bool = False) -> tuple[Started, list[ServiceStatus]]:
    """Start what is not running: broker, PostgreSQL, topics, then each service, as many
    instances of each as `settings.instances` asks (and the web console when `console`); the
    home's bearer tokens are generated first if it has none.

    If one of them fails to start, what this call started is stopped again before the error
    goes on: a PostgreSQL that cannot be reached left the broker running behind a failed
    `dwsim up` or `dwsim bench`.
    """
    broker_started = not settings.kafka_bootstrap and not broker.status(settings).running
    pg_started = not settings.database_url and not postgres.status(settings).running
    names = (*instance_names(settings), CONSOLE) if console else instance_names(settings)
    new = tuple(name for name in names if not service_status(settings, name).running)
    started = Started(broker_started, pg_started, new)
    try:
        tokens.ensure_tokens(settings)
        broker.start(settings)
        postgres.start(settings)
        topics.provision(settings)
        statuses = [start_service(settings, name) for name in names]
    except BaseException:
        take_down(settings, started)
        raise
    return started, statuses


STARTED_FILE = "started-by-dwsim-up.json"


def remember(settings: Settings, started: Started) -> None:
    """Record what `dwsim up` started, adding to what an earlier `up` started."""
    earlier = recall(settings)
    write_state(
        settings.home / STARTED_FILE,
        {
            "broker": started.broker or earlier.broker,
            "postgres": started.postgres or earlier.postgres,
            "services": sorted({*started.services, *earlier.services}),
        },
    )


def recall(settings: Settings) -> Started:
    """What `dwsim up` started and `dwsim down` has not stopped yet."""
    state = read_state(settings.home / STARTED_FILE) or {}
    return Started(
        bool(state.get("broker")), bool(state.get("postgres")), tuple(state.get("services", ()))
    )


def forget(settings: Settings) -> None:
    """After `dwsim down`: nothing of ours is running any more."""
    (settings.home / STARTED_FILE).unlink(missing_ok=True)


def known_instances(settings: Settings) -> tuple[str, ...]:
    """Every service instance this home knows, by service then number: those the settings
    ask for, those `dwsim up` recorded starting, and extra ones that left a state file."""
    names = {
        *instance_names(settings),
        *(name for name in recall(settings).services if name != CONSOLE),
        *(name for service in SERVICES for name in instances_of(settings, service)),
    }
    return tuple(
        sorted(
            names,
            key=lambda name: (SERVICES.index(split_instance(name)[0]), split_instance(name)[1]),
        )
    )


def take_down(settings: Settings, started: Started) -> None:
    """Stop what `bring_up` started, services first."""
    stop_all(settings, started.services)
    if started.postgres:
        postgres.stop(settings)
    if started.broker:
        broker.stop(settings)


def start_afresh(settings: Settings) -> None:
    """Leave nothing of an earlier run on this home: stop its services (every instance), its
    local broker (memory storage: the topics go with it) and make PostgreSQL's next start
    empty. A run stopped before it took its stack down would otherwise lend the next one its
    broker, topics and all, and the empty databases would consume the old run's events (a
    chaos run found staging rows for actuals its Dataverse never held)."""
    stop_all(settings, known_instances(settings))
    broker.stop(settings)
    postgres.start_empty(settings)


@contextmanager
def running_stack(
    settings: Settings, keep: bool = False, console: bool = False
) -> Iterator[list[ServiceStatus]]:
    """The stack for the block (with the web console when `console`); stops afterwards what it
    started unless `keep`."""
    started, statuses = bring_up(settings, console=console)
    try:
        yield statuses
    finally:
        if not keep:
            take_down(settings, started)
