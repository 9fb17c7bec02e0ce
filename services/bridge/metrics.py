"""The bridge's own series on /metrics: records by map and status, queue depth per map,
filtered source rows per map, and its faust worker's consumer lag (services/common/metrics.py
has the shared ones)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

import asyncpg
from prometheus_client.core import Metric

from services.bridge import filtered_repository as filtered_repo
from services.bridge import repository as repo
from services.bridge.domain import SyncStatus
from services.bridge.table_maps import TABLE_MAPS
from services.common.inbox import PartitionLag
from services.common.metrics import MetricSource, counts_family


def records_source(pool: asyncpg.Pool) -> MetricSource:
    """Records by map and status, and each map's paused-queue depth (its queued records),
    from the tally the database keeps with every change (migration 004): a few rows, not a
    count over bridge_record; and the filtered source rows per map, from their totals (one row
    per map, migration 008)."""

    async def collect() -> Iterable[Metric]:
        async with pool.acquire() as conn:
            tally = await repo.record_tally(conn)
            filtered = await filtered_repo.totals(conn)
        return [*records_families(tally), filtered_family(filtered)]

    return collect


def records_families(tally: dict[tuple[str, str], int]) -> list[Metric]:
    """The two gauges of a tally of records by (map, status); every map and status appears,
    at 0 when it has no record, so a rate or an alert never meets a missing series."""
    maps = sorted({m.name for m in TABLE_MAPS} | {m for m, _ in tally})
    by_status = {(m, s.value): tally.get((m, s.value), 0) for m in maps for s in SyncStatus} | {
        key: count for key, count in tally.items()
    }
    queued = {(m,): tally.get((m, SyncStatus.QUEUED.value), 0) for m in maps}
    return [
        counts_family(
            "dwsim_bridge_records",
            "Bridge records by table map and sync status",
            ["map", "status"],
            by_status.items(),
        ),
        counts_family(
            "dwsim_bridge_queue_depth",
            "Records waiting in a map's paused queue",
            ["map"],
            queued.items(),
        ),
    ]


def filtered_family(totals: dict[str, int]) -> Metric:
    """Source rows each map's filter left out (counted, not stored as records); every map
    appears, at 0 when it filtered nothing."""
    maps = sorted({m.name for m in TABLE_MAPS} | set(totals))
    return counts_family(
        "dwsim_bridge_filtered_rows",
        "Source rows a table map's filter left out (counted, not stored as records)",
        ["map"],
        [((m,), totals.get(m, 0)) for m in maps],
    )


async def faust_partition_lags(app: Any) -> list[PartitionLag]:
    """The faust worker's assigned partitions: the high-water mark of its last fetch, and the
    offset it committed (faust's own mark), else (nothing committed yet) its position."""
    consumer: Any = app.consumer
    committed: Any = getattr(consumer, "_committed_offset", {})
    lags = []
    for tp in sorted(consumer.assignment()):
        try:
            highwater = consumer.highwater(tp)
        except AssertionError:  # revoked since `assignment()`
            continue
        consumed = committed.get(tp)
        if consumed is None:
            with contextlib.suppress(Exception):
                # Waits only while the position is being reset; a scrape must not hang.
                consumed = await asyncio.wait_for(consumer.position(tp), 0.2)
        lags.append(PartitionLag(tp.topic, tp.partition, highwater, consumed))
    return lags
