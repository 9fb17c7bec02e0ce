"""The bridge's record series on /metrics against its database, through pause, queue, resume,
a refusal and receipts: records by map and status, queue depth, round-trip observations."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.bridge.table_maps import ACTUALS_MAP_NAME
from services.common.settings import Settings
from tests.integration.bridge.bridge_harness import (
    BridgeProcess,
    FakeTarget,
    Publisher,
    Received,
    actual_created,
    invoice_confirmed,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

Labels = tuple[tuple[str, str], ...]


async def scrape(bridge: BridgeProcess) -> dict[tuple[str, Labels], float]:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{bridge.url}/metrics")
    assert response.status_code == 200, response.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def by_labels(samples: dict[tuple[str, Labels], float], name: str) -> dict[Labels, float]:
    return {labels: v for (n, labels), v in samples.items() if n == name and v}


async def database(settings: Settings) -> tuple[dict[Labels, float], dict[Labels, float]]:
    """Records by (map, status) and queue depth by map, counted with plain SQL."""
    conn = await asyncpg.connect(settings.service_database_url("bridge"))
    try:
        records = await conn.fetch(
            "SELECT map_name, status, count(*) AS n FROM bridge_record GROUP BY 1, 2"
        )
        queue = await conn.fetch("SELECT map_name, count(*) AS n FROM bridge_queue GROUP BY 1")
    finally:
        await conn.close()
    return (
        {(("map", r["map_name"]), ("status", r["status"])): r["n"] for r in records},
        {(("map", r["map_name"]),): r["n"] for r in queue},
    )


async def agrees(bridge: BridgeProcess, settings: Settings) -> dict[tuple[str, Labels], float]:
    samples = await scrape(bridge)
    records, queue = await database(settings)
    assert by_labels(samples, "dwsim_bridge_records") == records
    assert by_labels(samples, "dwsim_bridge_queue_depth") == queue
    return samples


async def test_record_metrics_follow_pause_queue_resume_refusal_and_receipts(
    settings: Settings, bridge: BridgeProcess
) -> None:
    response = await bridge.post("/maps/actuals/pause")
    assert response.status_code == 200, response.text
    invoice = invoice_confirmed().invoice_id
    actuals = [actual_created(invoice_id=invoice) for _ in range(20)]
    async with Publisher(settings) as dataverse:
        await dataverse.actual(*actuals)
        await dataverse.flush()

    async def all_queued() -> bool:
        return bool((await bridge.get("/maps/actuals/queue"))["count"] == 20)

    await wait_for(all_queued, 60, what="20 queued records")
    samples = await agrees(bridge, settings)
    queue_depth = (("map", ACTUALS_MAP_NAME),)
    assert by_labels(samples, "dwsim_bridge_queue_depth") == {queue_depth: 20}

    refused = str(actuals[7].actual_id)

    def refuse_one(message: Received) -> str | None:
        if message.value["payload"]["msdyn_actualid"] == refused:
            return "line property missing for billing type Chargeable"
        return None

    async with FakeTarget(settings, policy=refuse_one):
        assert (await bridge.post("/maps/actuals/resume")).status_code == 200

        async def settled() -> bool:
            records, _ = await database(settings)
            mine = {
                labels[1][1]: n for labels, n in records.items() if labels[0][1] == ACTUALS_MAP_NAME
            }
            return mine == {"synced": 19, "failed": 1}

        await wait_for(settled, 60, what="19 records synced and 1 refused")
    samples = await agrees(bridge, settings)
    assert by_labels(samples, "dwsim_bridge_queue_depth") == {}
    round_trips = samples[
        ("dwsim_bridge_receipt_round_trip_seconds_count", (("map", ACTUALS_MAP_NAME),))
    ]
    assert round_trips == 19
