"""`/metrics` in Prometheus' text format: each process's own registry, its series named `dwsim_`.

Two kinds of series:
- kept by the process as things happen: HTTP requests by route template and status (the
  `HttpMetrics` middleware), the bridge's receipt round trips (a histogram the database fills
  already counted per bucket, `RoundTripHistogram`);
- read at scrape time from figures the process already keeps (the relay's published rows, the
  consumer's `ConsumerStats`, the fetch high-water marks) or from one cheap query (the outbox
  backlog, the bridge's record tally): *sources*, async callables the scrape awaits before it
  renders. No source groups a business table per scrape.

Nothing here carries business data: labels are topics, partitions, routes, maps and statuses,
never an id or a name.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.inbox import ConsumerStats, PartitionLag

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

MetricSource = Callable[[], Awaitable[Iterable[Metric]]]

# Seconds from a record's send to its receipt's settlement: the local flow answers in tens of
# milliseconds, a target that is down makes it the re-drive's timeout (minutes).
ROUND_TRIP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass(frozen=True)
class RoundTripCount:
    """Receipt round trips of one map that fell in one bucket of `ROUND_TRIP_BUCKETS`: its
    index (`len(ROUND_TRIP_BUCKETS)` for +Inf), how many, and their seconds summed."""

    map_name: str
    bucket: int
    records: int
    seconds: float


class RoundTripHistogram(Collector):
    """`dwsim_bridge_receipt_round_trip_seconds`: Prometheus' histogram, filled a batch at a
    time with round trips the database already counted per map and bucket (the statement that
    settles the records does it), so a receipt costs no Python work per record here."""

    NAME = "dwsim_bridge_receipt_round_trip_seconds"

    def __init__(self) -> None:
        self._buckets: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}

    def add(self, counts: Iterable[RoundTripCount]) -> None:
        """Count a batch's round trips."""
        for count in counts:
            buckets = self._buckets.setdefault(count.map_name, [0] * (len(ROUND_TRIP_BUCKETS) + 1))
            buckets[count.bucket] += count.records
            self._sums[count.map_name] = self._sums.get(count.map_name, 0.0) + count.seconds

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(
            self.NAME,
            "From a bridge record's last send to the receipt that settled it as synced",
            labels=["map"],
        )
        # As prometheus_client writes them: `0.025`, `1.0`, `+Inf`.
        edges = [repr(b) for b in ROUND_TRIP_BUCKETS] + ["+Inf"]
        for map_name in sorted(self._buckets):
            cumulative = itertools.accumulate(self._buckets[map_name])
            family.add_metric(
                [map_name], list(zip(edges, cumulative, strict=True)), self._sums[map_name]
            )
        return [family]


class _Scraped(Collector):
    """Hands the registry what the sources returned for the scrape in hand."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterable[Metric]:
        return self.families


class ServiceMetrics:
    """One process's registry (never the global one: tests run several services in one
    process) and the series every service has."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=False)
        self.http_requests = Counter(
            "dwsim_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.receipt_round_trips = RoundTripHistogram()
        self.registry.register(self.receipt_round_trips)
        self._scraped = _Scraped()
        self.registry.register(self._scraped)
        self._sources: list[MetricSource] = []

    def add_source(self, source: MetricSource) -> None:
        """Read `source` at every scrape."""
        self._sources.append(source)

    async def render(self) -> bytes:
        """The exposition of every series, the sources read now."""
        info = GaugeMetricFamily(
            "dwsim_service", "The service this process runs", labels=["service"]
        )
        info.add_metric([self.service], 1)
        families: list[Metric] = [info]
        for source in self._sources:
            families.extend(await source())
        # No await between setting and rendering: a concurrent scrape cannot interleave.
        self._scraped.families = families
        return generate_latest(self.registry)


# --------------------------------------------------------------------------------------------
# Sources every service shares


def outbox_source(pool: asyncpg.Pool, relay: Any) -> MetricSource:
    """The outbox backlog (one count of the unpublished rows, which the relay's partial index
    keeps small) and the rows this process's relay published."""

    async def collect() -> Iterable[Metric]:
        async with pool.acquire() as conn:
            backlog = await conn.fetchval(
                "SELECT count(*) FROM dwsim_outbox WHERE published_at IS NULL"
            )
        waiting = GaugeMetricFamily(
            "dwsim_outbox_unpublished", "Outbox rows waiting for the relay", value=backlog
        )
        published = CounterMetricFamily(
            "dwsim_outbox_published",
            "Outbox rows this process's relay published and marked",
            value=relay.published if relay is not None else 0,
        )
        return [waiting, published]

    return collect


def consumer_source(stats: ConsumerStats) -> MetricSource:
    """The consumer's outcomes since the process started (`ConsumerStats`), as counters."""

    async def collect() -> Iterable[Metric]:
        return consumer_families(stats)

    return collect


def consumer_families(stats: ConsumerStats) -> list[Metric]:
    """Counters of what the consumer made of each message it read."""
    figures = {
        "applied": ("dwsim_inbox_applied", "Events applied (their id recorded in the inbox)"),
        "duplicates": ("dwsim_inbox_duplicates", "Events skipped: their id was in the inbox"),
        "parked": ("dwsim_inbox_parked", "Events whose handler failed, parked with the reason"),
        "dead_lettered": (
            "dwsim_inbox_dead_lettered",
            "Messages sent to their .dlq topic (too large, invalid or unprocessable)",
        ),
    }
    return [
        CounterMetricFamily(name, text, value=getattr(stats, field))
        for field, (name, text) in figures.items()
    ]


def lag_family(partitions: Iterable[PartitionLag]) -> GaugeMetricFamily:
    """Consumer lag per topic and partition: the fetch responses' high-water mark minus the
    next offset to read. Not `end_offsets()` (ListOffsets), which the default broker
    under-reports (DESIGN.md). A partition not fetched yet has no high-water mark: left out."""
    family = GaugeMetricFamily(
        "dwsim_consumer_lag",
        "Messages of an assigned partition not yet consumed (fetch high-water mark minus "
        "the group's next offset)",
        labels=["topic", "partition"],
    )
    for p in sorted(partitions, key=lambda p: (p.topic, p.partition)):
        if p.highwater is None or p.consumed is None:
            continue
        family.add_metric([p.topic, str(p.partition)], max(p.highwater - p.consumed, 0))
    return family


def counts_family(
    name: str,
    documentation: str,
    labels: Sequence[str],
    counts: Iterable[tuple[Sequence[str], int]],
) -> GaugeMetricFamily:
    """A gauge with one sample per label values, e.g. records by (map, status): `counts` is
    (label values, count) pairs."""
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    for values, count in sorted(counts, key=lambda pair: tuple(pair[0])):
        family.add_metric(list(values), count)
    return family


# --------------------------------------------------------------------------------------------
# HTTP requests


# A client may send any method name; a label takes only these, so series stay few.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetrics:
    """ASGI middleware: counts each answered request by its route's path template (never the
    raw path, which holds ids) and status, in the app's `state.metrics` when it has one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # an exception that escapes every handler is answered 500 by the server

        async def tracked(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        finally:
            metrics = getattr(getattr(scope.get("app"), "state", None), "metrics", None)
            if isinstance(metrics, ServiceMetrics):
                method = scope["method"] if scope["method"] in _METHODS else "other"
                metrics.http_requests.labels(
                    route=route_template(scope), method=method, status=str(status)
                ).inc()


def route_template(scope: Scope) -> str:
    """The path template of the route that answered (`/invoices/{invoice_id}`), or
    "unmatched" for a path no route has: the raw path would put ids in the labels."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(template) if template else "unmatched"
