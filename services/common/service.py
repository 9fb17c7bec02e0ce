"""Runs one service process: migrations, API, outbox relay, consumer and periodic workers.

Every background task is owned here: SIGTERM or SIGINT stops them all; a task that dies with an
error stops the process with exit code 1 rather than leaving a half-working service behind.
A lost database is not such an error: each worker waits it out itself, and one that lets a
transient database error escape is run again after a backoff (`supervise`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import uvicorn
from fastapi import FastAPI

from services.common.backoff import Backoff
from services.common.db import (
    TRANSIENT_DATABASE_ERRORS,
    DatabaseStatus,
    create_pool,
    database_status,
    migrate_service,
)
from services.common.event_loop import new_event_loop
from services.common.inbox import InboxConsumer, PartitionLag, Subscription
from services.common.logging import configure_logging, get_logger
from services.common.metrics import (
    ServiceMetrics,
    consumer_source,
    lag_family,
    outbox_source,
)
from services.common.otel import start_export
from services.common.outbox import OutboxRelay
from services.common.ports import free_port
from services.common.retention import COMMON_RULES, PruneRule, RetentionWorker
from services.common.settings import Settings

log = get_logger(__name__)


class Worker(Protocol):
    """A background task the service owns."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class ServiceDefinition:
    """What makes a service: its name, schema, API, subscriptions and workers."""

    name: str
    migrations: Path
    build_app: Callable[[], FastAPI]
    subscriptions: Callable[[Settings], list[Subscription]] = lambda _: []
    workers: Callable[[asyncpg.Pool, Settings], list[Worker]] = lambda _p, _s: []
    on_start: Callable[[asyncpg.Pool, Settings], Awaitable[None]] | None = None
    extra_state: dict[str, Any] = field(default_factory=dict)
    # What the service keeps only for a while (services/common/retention.py).
    prune_rules: tuple[PruneRule, ...] = COMMON_RULES


class EmbeddedServer(uvicorn.Server):
    """uvicorn without signal handling of its own: the process (the service's `serve`, or the
    bridge's faust worker) owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def embedded_server(app: FastAPI, settings: Settings, port: int) -> EmbeddedServer:
    """The service's API server, run as a task of the process (`serve()` it)."""
    return EmbeddedServer(
        uvicorn.Config(
            app,
            host=settings.api_host,
            port=port,
            log_level="warning",
            lifespan="off",
            # uvicorn's own handlers would print plain text and stop its lines from reaching
            # the root logger, which renders them as every other line (services/common/logging.py).
            log_config=None,
        )
    )


def wire_app(
    app: FastAPI,
    *,
    pool: asyncpg.Pool,
    settings: Settings,
    name: str,
    relay: OutboxRelay,
    consumer: Any,
    rewind: Callable[[], Awaitable[list[str]]] | None = None,
    lags: Callable[[], Awaitable[list[PartitionLag]]] | None = None,
    **extra: Any,
) -> ServiceMetrics:
    """What the shared routes (services/common/api.py) read from `app.state`: the pool, the
    settings, the service's name, its relay and its consumer (/health shows its `stats`,
    /parked-events calls its `retry_parked`), how to rewind the consumer (/consumer/rewind;
    the consumer's own `rewind` unless given), and what else the service's own routes
    need.

    Also the process's metrics (/metrics): the outbox, the consumer's counters and its lag
    per partition (`lags`, the consumer's own `partition_lags` unless given); returned, for
    the service to add its own sources."""
    app.state.pool = pool
    app.state.settings = settings
    app.state.service_name = name
    app.state.relay = relay
    app.state.consumer = consumer
    app.state.rewind = rewind or getattr(consumer, "rewind", None)
    for key, value in extra.items():
        setattr(app.state, key, value)
    metrics = ServiceMetrics(name)
    metrics.add_source(outbox_source(pool, relay))
    stats = getattr(consumer, "stats", None)
    if stats is not None:
        metrics.add_source(consumer_source(stats))
    read_lags = lags or getattr(consumer, "partition_lags", None)
    if read_lags is not None:
        lag_of = read_lags

        async def lag() -> list[Any]:
            return [lag_family(await lag_of())]

        metrics.add_source(lag)
    app.state.metrics = metrics
    return metrics


def service_state_file(settings: Settings, name: str) -> Path:
    """Where a running service records its pid and API address."""
    return settings.home / "services" / f"{name}.json"


class ServiceStateFile:
    """The running service's pid and API address in `service_state_file`, for the CLI."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.path = service_state_file(settings, name)
        self.url = ""

    def write(self, settings: Settings, port: int) -> str:
        """Record this process as the running service; its API's URL."""
        self.url = f"http://{settings.api_host}:{port}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"pid": os.getpid(), "port": port, "url": self.url}))
        return self.url

    def remove(self) -> None:
        """Forget the service, unless another process has recorded itself since."""
        with contextlib.suppress(FileNotFoundError, ValueError):
            if json.loads(self.path.read_text()).get("pid") == os.getpid():
                self.path.unlink()


def port_for(settings: Settings, name: str) -> int:
    """The service's API port: its `<name>_port` setting, else a free one."""
    port: int = getattr(settings, f"{name}_port", 0)
    return port or free_port(settings.api_host)


async def serve(definition: ServiceDefinition, settings: Settings) -> int:
    """Run the service until a signal stops it; returns the process exit code."""
    configure_logging(definition.name, settings.log_level, settings.log_format)
    start_export(settings, definition.name)
    # Fail at the start, naming the tokens file, rather than with a 500 on the first request.
    settings.role_tokens()
    pool = await create_pool(settings.service_database_url(definition.name), max_size=10)
    try:
        await migrate_service(pool, definition.name, definition.migrations)
        if definition.on_start is not None:
            await definition.on_start(pool, settings)
        app = definition.build_app()
        relay = OutboxRelay(pool, settings, definition.name)
        subscriptions = definition.subscriptions(settings)
        consumer = (
            InboxConsumer(
                pool, settings, f"{settings.topic_prefix}{definition.name}", subscriptions
            )
            if subscriptions
            else None
        )
        workers: list[Worker] = [
            relay,
            RetentionWorker(pool, settings, definition.prune_rules),
            *definition.workers(pool, settings),
        ]
        if consumer is not None:
            workers.append(consumer)
        metrics = wire_app(
            app,
            pool=pool,
            settings=settings,
            name=definition.name,
            relay=relay,
            consumer=consumer,
            **definition.extra_state,
        )
        for worker in workers:
            # A worker with figures of its own (Finance's import runs) shows them too.
            source = getattr(worker, "collect_metrics", None)
            if source is not None:
                metrics.add_source(source)
        port = port_for(settings, definition.name)
        server = embedded_server(app, settings, port)
        return await _run_all(
            definition.name, settings, server, port, workers, database_status(pool)
        )
    finally:
        await pool.close()


async def supervise(
    worker: Worker, name: str, database: DatabaseStatus, settings: Settings
) -> None:
    """Run `worker` until it returns; a transient database error that escapes it (each worker
    waits out a lost database itself; this is the net under them) runs it again after a
    backoff rather than ending the process. Any other error ends this, as before."""
    backoff = Backoff(settings.database_retry_max_backoff_s)
    while True:
        try:
            await worker.run()
            return
        except TRANSIENT_DATABASE_ERRORS as exc:
            database.failed(exc, name)
            retry_in = backoff.next_delay()
            log.warning(
                "worker_restarting", worker=name, error=repr(exc), retry_in=round(retry_in, 2)
            )
            await asyncio.sleep(retry_in)


async def _run_all(
    name: str,
    settings: Settings,
    server: uvicorn.Server,
    port: int,
    workers: list[Worker],
    database: DatabaseStatus,
) -> int:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    tasks = {
        asyncio.create_task(
            supervise(w, type(w).__name__, database, settings), name=type(w).__name__
        ): w
        for w in workers
    }
    api = asyncio.create_task(server.serve(), name="api")
    state_file = ServiceStateFile(settings, name)
    url = state_file.write(settings, port)
    log.info("service_started", url=url, openapi=f"{url}/docs")
    stop_wait = asyncio.create_task(stopping.wait())
    done, _ = await asyncio.wait({*tasks, api, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    exit_code = 0
    for task in done:
        if task is not stop_wait and not task.cancelled() and task.exception() is not None:
            log.error("task_crashed", task=task.get_name(), error=repr(task.exception()))
            exit_code = 1
        elif task is not stop_wait:
            log.error("task_ended", task=task.get_name())
            exit_code = 1
    for worker in workers:
        worker.stop()
    server.should_exit = True
    pending = [*tasks, api]
    _, still = await asyncio.wait(pending, timeout=8)
    for task in still:
        task.cancel()
    with contextlib.suppress(Exception):
        await asyncio.gather(*still, return_exceptions=True)
    stop_wait.cancel()
    state_file.remove()
    log.info("service_stopped", exit_code=exit_code)
    return exit_code


def main(definition: ServiceDefinition) -> None:
    """Entry point of `python -m services.<name>`."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        raise SystemExit(runner.run(serve(definition, Settings())))
