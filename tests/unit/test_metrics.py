"""The pure parts of /metrics: labels, lag arithmetic, record gauges, the exposition format."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Route

from services.bridge.domain import SyncStatus
from services.bridge.metrics import filtered_family, records_families
from services.bridge.table_maps import TABLE_MAPS
from services.common.inbox import ConsumerStats, PartitionLag
from services.common.metrics import (
    RoundTripCount,
    ServiceMetrics,
    consumer_families,
    lag_family,
    route_template,
)


def samples_of(metrics: ServiceMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = asyncio.run(metrics.render()).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_request_is_labelled_by_its_route_template_never_by_its_path() -> None:
    route = Route("/invoices/{invoice_id}/lines", endpoint=lambda _: None)
    scope: dict[str, Any] = {"route": route, "path": "/invoices/INV-000123/lines"}
    assert route_template(scope) == "/invoices/{invoice_id}/lines"
    assert route_template({"path": "/no/such/page"}) == "unmatched"


def test_lag_is_high_water_minus_next_offset_and_unknown_partitions_are_left_out() -> None:
    family = lag_family(
        [
            PartitionLag("t", 1, highwater=10, consumed=7),
            PartitionLag("t", 0, highwater=5, consumed=5),
            PartitionLag("t", 2, highwater=None, consumed=3),  # never fetched
            PartitionLag("t", 3, highwater=4, consumed=None),  # nothing known yet
            PartitionLag("t", 4, highwater=4, consumed=6),  # rewound log: never negative
        ]
    )
    assert [(s.labels["partition"], s.value) for s in family.samples] == [
        ("0", 0),
        ("1", 3),
        ("4", 0),
    ]


def test_consumer_stats_become_counters_with_their_values() -> None:
    stats = ConsumerStats(applied=7, duplicates=2, dead_lettered=1, parked=3)
    metrics = ServiceMetrics("finance")

    async def source() -> list[Any]:
        return consumer_families(stats)

    metrics.add_source(source)
    samples = samples_of(metrics)
    assert samples[("dwsim_inbox_applied_total", ())] == 7
    assert samples[("dwsim_inbox_duplicates_total", ())] == 2
    assert samples[("dwsim_inbox_dead_lettered_total", ())] == 1
    assert samples[("dwsim_inbox_parked_total", ())] == 3
    assert samples[("dwsim_service", (("service", "finance"),))] == 1


def test_records_by_status_show_every_map_and_status_and_the_queue_is_the_queued_ones() -> None:
    invoices = TABLE_MAPS[0].name
    families = records_families({(invoices, "synced"): 4, (invoices, "queued"): 2})
    records, queue = families
    by_labels = {(s.labels["map"], s.labels["status"]): s.value for s in records.samples}
    assert len(by_labels) == len(TABLE_MAPS) * len(SyncStatus)
    assert by_labels[(invoices, "synced")] == 4
    assert sum(by_labels.values()) == 6
    assert {s.labels["map"]: s.value for s in queue.samples}[invoices] == 2


def test_round_trips_are_observed_per_map_in_the_process_registry_only() -> None:
    one, other = ServiceMetrics("bridge"), ServiceMetrics("bridge")
    one.receipt_round_trips.add(
        [
            RoundTripCount("invoices", 1, 1, 0.02),
            RoundTripCount("invoices", 8, 1, 3.0),
            RoundTripCount("actuals", 4, 1, 0.2),
        ]
    )
    samples = samples_of(one)
    name = "dwsim_bridge_receipt_round_trip_seconds"
    assert samples[(f"{name}_count", (("map", "invoices"),))] == 2
    assert samples[(f"{name}_bucket", (("le", "0.025"), ("map", "invoices")))] == 1
    assert samples[(f"{name}_sum", (("map", "actuals"),))] == 0.2
    # Registries are per process object, not the global one: nothing leaked into `other`.
    assert (f"{name}_count", (("map", "invoices"),)) not in samples_of(other)


def test_filtered_rows_show_every_map_at_zero_when_it_filtered_nothing() -> None:
    invoices, actuals = TABLE_MAPS[0].name, TABLE_MAPS[1].name
    family = filtered_family({actuals: 7})
    assert {s.labels["map"]: s.value for s in family.samples} == {invoices: 0, actuals: 7}
