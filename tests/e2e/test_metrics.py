"""/metrics of every service during a small flow, checked against the services' databases.

The counters are the processes' own (since each started); the truths are rows counted with
plain SQL on each service's database. Counters are compared as the change over this test's
flow (the session's stack may have run other tests before), the bridge's records by status as
absolute figures (they come from the database's own tally).
"""

from __future__ import annotations

from collections import Counter as Tally
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.simulator.harness import DwsimTest
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

SERVICES = ("dataverse", "finance", "bridge")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(dwsim: DwsimTest, service: str) -> tuple[str, Samples]:
    """The exposition text of a service (no token: Prometheus has none) and its samples."""
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{dwsim.stack.url(service)}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return response.text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


async def database_counts(dwsim: DwsimTest, service: str) -> dict[str, Any]:
    """What the service's database holds, counted with plain SQL."""
    conn = await asyncpg.connect(dwsim.settings.service_database_url(service))
    try:
        counts: dict[str, Any] = {
            "inbox": await conn.fetchval("SELECT count(*) FROM dwsim_inbox"),
            "published": await conn.fetchval(
                "SELECT count(*) FROM dwsim_outbox WHERE published_at IS NOT NULL"
            ),
            "unpublished": await conn.fetchval(
                "SELECT count(*) FROM dwsim_outbox WHERE published_at IS NULL"
            ),
        }
        if service == "bridge":
            rows = await conn.fetch(
                "SELECT map_name, status, count(*) AS n FROM bridge_record GROUP BY 1, 2"
            )
            counts["records"] = {(r["map_name"], r["status"]): r["n"] for r in rows}
            queued = await conn.fetch(
                "SELECT map_name, count(*) AS n FROM bridge_queue GROUP BY map_name"
            )
            counts["queue"] = {r["map_name"]: r["n"] for r in queued}
        return counts
    finally:
        await conn.close()


async def quiet(dwsim: DwsimTest) -> bool:
    """Every outbox published, every consumer caught up: a lag on each partition it reads
    (the three subscribe to 6 partitions or more), 0 on every one."""
    for service in SERVICES:
        _, samples = await scrape(dwsim, service)
        if value(samples, "dwsim_outbox_unpublished") != 0:
            return False
        lags = [v for (n, _), v in samples.items() if n == "dwsim_consumer_lag"]
        if len(lags) < 6 or any(lags):
            return False
    return True


async def test_metrics_agree_with_the_databases_after_an_invoice_flow(dwsim: DwsimTest) -> None:
    await wait_for(lambda: quiet(dwsim), 60, "the stack to be quiet before the flow")
    before = {s: await scrape(dwsim, s) for s in SERVICES}
    rows_before = {s: await database_counts(dwsim, s) for s in SERVICES}

    invoice = await dwsim.confirmed_invoice()
    await dwsim.post_journals()
    await dwsim.post_invoice(invoice)
    await dwsim.until_event("invoice-posted", invoice)
    await dwsim.assert_reconciled()
    await wait_for(lambda: quiet(dwsim), 60, "every outbox published and every lag at 0")

    after = {s: await scrape(dwsim, s) for s in SERVICES}
    rows_after = {s: await database_counts(dwsim, s) for s in SERVICES}
    for service in SERVICES:
        text, samples = after[service]
        _, earlier = before[service]
        rows, rows_earlier = rows_after[service], rows_before[service]

        def grew(name: str, samples: Samples = samples, earlier: Samples = earlier) -> float:
            return total(samples, name) - total(earlier, name)

        # Every event applied is one inbox row, and no event of this flow came twice.
        assert grew("dwsim_inbox_applied_total") == rows["inbox"] - rows_earlier["inbox"] > 0, (
            service
        )
        assert grew("dwsim_inbox_dead_lettered_total") == 0, service
        assert grew("dwsim_inbox_parked_total") == 0, service
        assert (
            grew("dwsim_outbox_published_total")
            == (rows["published"] - rows_earlier["published"])
            > 0
        ), service
        assert value(samples, "dwsim_outbox_unpublished") == rows["unpublished"] == 0
        # The scrapes before are counted by route template, and nothing names a business id.
        assert (
            value(
                samples, "dwsim_http_requests_total", route="/metrics", method="GET", status="200"
            )
            >= 2
        ), service
        assert invoice.invoice_id not in text, service
        assert value(samples, "dwsim_service", service=service) == 1

    _, bridge = after["bridge"]
    records = rows_after["bridge"]["records"]
    reported = {
        (dict(labels)["map"], dict(labels)["status"]): v
        for (name, labels), v in bridge.items()
        if name == "dwsim_bridge_records" and v
    }
    assert reported == records
    queues = rows_after["bridge"]["queue"]
    depths = {
        dict(labels)["map"]: v
        for (name, labels), v in bridge.items()
        if name == "dwsim_bridge_queue_depth"
    }
    assert {m: d for m, d in depths.items() if d} == queues
    assert set(depths) == {m for m, _ in records} | set(queues)
    # One round trip observed per record the flow saw synced.
    synced = Tally({m: n for (m, s), n in records.items() if s == "synced"})
    synced.subtract(
        {m: n for (m, s), n in rows_before["bridge"]["records"].items() if s == "synced"}
    )
    _, bridge_before = before["bridge"]
    for map_name, grown in synced.items():
        name = "dwsim_bridge_receipt_round_trip_seconds_count"
        observed = value(bridge, name, map=map_name) - value(bridge_before, name, map=map_name)
        assert observed == grown, map_name
    assert sum(synced.values()) > 0

    # The consumers report lag for the topics they read (0 now: `quiet` waited for it).
    _, finance = after["finance"]
    lag_topics = {
        dict(labels)["topic"]
        for (name, labels), _ in finance.items()
        if name == "dwsim_consumer_lag"
    }
    assert dwsim.topic("fo-invoice-proposals") in lag_topics
    assert value(finance, "dwsim_finance_import_runs_total", outcome="ok") > 0
    assert ("dwsim_finance_proposals_waiting", ()) in finance
