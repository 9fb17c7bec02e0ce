"""Two instances of every service on one database and one set of topics (issue 23, item 1).

`dwsim up --instances bridge=2,finance=2,dataverse=2` starts them; the demo's flow runs on a
few invoices while one instance of each service is SIGKILLed twice, with work in flight: first
the instances that started first (the outbox relays' leaders, the instances the clients talk
to), so that the second ones carry the flow alone; later, the first ones started again, the
second ones. The reconciliation compares the
sources of truth by id, so an event lost or applied twice shows as a difference; the counts of
each database are checked against Dataverse besides. Each instance's /health says what its
consumer applied: both instances of each service must have applied events.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.settings import SERVICES, Settings
from services.simulator import faults
from services.simulator.clients import Services
from services.simulator.demo import DemoRun, new_progress
from services.simulator.processes import instance_name, live_instances, log_path
from services.simulator.reconcile import reconcile
from services.simulator.resources import read_cpu, service_memory_mb
from services.simulator.seed import plan_demo
from services.simulator.snapshot import fetch_snapshot
from tests.e2e.conftest import run_dwsim
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

BUSINESS_DATE = date(2026, 10, 1)
INSTANCES = tuple(instance_name(service, n) for service in SERVICES for n in (1, 2))


def test_killing_one_instance_of_each_service_mid_flow_loses_and_doubles_nothing(
    dwsim_home: Path,
) -> None:
    up = run_dwsim(dwsim_home, "up", "--instances", "bridge=2,finance=2,dataverse=2", timeout=240)
    assert up.returncode == 0, (up.stdout + up.stderr)[-4000:]
    status = run_dwsim(dwsim_home, "status", "--json", timeout=60)
    assert status.returncode == 0, (status.stdout + status.stderr)[-3000:]
    listed = json.loads(status.stdout.strip().splitlines()[-1])["services"]
    assert {name for name, s in listed.items() if s["running"]} >= set(INSTANCES), listed
    assert len({listed[name]["pid"] for name in INSTANCES}) == len(INSTANCES), listed
    settings = Settings(home=dwsim_home)
    for name in INSTANCES:
        assert log_path(settings, name).exists(), f"{name} has no log of its own"
    # The bench's resource figures measure the whole stack: every instance's memory, and its
    # CPU counted under its service.
    assert set(service_memory_mb(settings)) == set(INSTANCES)
    counted = Counter(p.process for p in read_cpu(settings).processes.values() if not p.database)
    assert {service: counted[service] for service in SERVICES} == dict.fromkeys(SERVICES, 2)
    applied = asyncio.run(_flow(settings))
    for service in SERVICES:
        for n in (1, 2):
            name = instance_name(service, n)
            assert applied[name] > 0, f"{name} applied no event: {dict(applied)}"


async def _flow(settings: Settings) -> Counter[str]:
    """The demo's flow with the kills in it; returns the events each instance applied (the
    sum over its processes' lives), as the instances' /health reported them."""
    services = Services(settings)
    plan = plan_demo(seed=23, invoices=6, business_date=BUSINESS_DATE)
    watcher = _ConsumerWatch(settings)
    watching = asyncio.create_task(watcher.run())
    try:
        with new_progress() as progress:
            run = DemoRun(services, plan, progress, deadline_s=120)
            await run.setup()
            await run.approve_entries()
            # The actuals are on their way: Dataverse's relay, the bridge, Finance's consumer.
            # The first instances go: the relays' leaders, and the instances the clients talk
            # to, so the flow goes on through the second ones alone.
            await _kill(settings, watcher, 1)
            await run.sync_and_post_journals()
            await run.invoice(limit=3)
            # The second instances alone carry the three invoices to their proposal lines and
            # the journals' accounting detail back to Dataverse: waiting for both is what makes
            # every second instance apply events, whatever partitions it held before.
            await run.import_proposal_lines()
            await _wait_journals_stamped(services)
            # The first instances come back and the second ones go: the flow moves back.
            for service in SERVICES:
                faults.start(settings, f"{service}-1")
            await _kill(settings, watcher, 2)
            await run.invoice()
            await run.import_proposal_lines()
            await run.post_proposals()
            await run.wait_accounting_back()
        report = reconcile(await fetch_snapshot(services))
        assert report.agree, [d.to_json() for d in report.differences]
        await _assert_counts(services, len(run.invoice_ids))
        assert await services.bridge.get("/errors", status="open") == []
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await services.close()
    return watcher.applied()


async def _wait_journals_stamped(services: Services) -> None:
    """Wait until every synced actual that is not billed sales carries the voucher of its
    posted integration journal (Dataverse's consumer applied the accounting detail)."""

    async def stamped() -> bool:
        actuals = await services.dataverse.get("/actuals")
        journaled = [
            a for a in actuals if not a["skip_sync"] and a["transaction_type"] != "billed_sales"
        ]
        return bool(journaled) and all(a.get("voucher") for a in journaled)

    await wait_for(stamped, deadline_s=120, what="the journals' accounting detail in Dataverse")


async def _kill(settings: Settings, watcher: _ConsumerWatch, n: int) -> None:
    """SIGKILL the `n`th instance of every service (its last /health figures are kept), and
    check that the other instance still answers."""
    await watcher.poll()
    for service in SERVICES:
        # Numbered, the one instance: a service's bare name would be every instance of it.
        assert faults.kill(settings, f"{service}-{n}"), f"{service}-{n} was not running"
        watcher.ended(instance_name(service, n))
        assert [s.name for s in live_instances(settings, service)] != [], service


async def _assert_counts(services: Services, invoices: int) -> None:
    """Counts by id in each database: every synced actual staged once, every invoice once."""
    actuals = await services.dataverse.get("/actuals")
    synced = sorted(str(a["actual_id"]) for a in actuals if not a["skip_sync"])
    staged = sorted(str(r["actual_id"]) for r in await services.finance.get("/staging"))
    assert staged == synced, (len(staged), len(synced))
    proposals = await services.finance.get("/proposals")
    ids = [str(p["proposal_id"]) for p in proposals]
    assert len(ids) == len(set(ids)) == invoices, ids


class _ConsumerWatch:
    """Polls every instance's /health: the events its consumer applied, per process life
    (a restarted instance counts from zero again)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._current: dict[str, int] = {}
        self._ended: Counter[str] = Counter()

    def applied(self) -> Counter[str]:
        """Events each instance applied over all its lives so far."""
        return self._ended + Counter(self._current)

    def ended(self, name: str) -> None:
        """The instance's process is gone: its last figure is kept, the next life starts at 0."""
        self._ended[name] += self._current.pop(name, 0)

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await self.poll()
            await asyncio.sleep(0.5)

    async def poll(self) -> None:
        """Read each live instance's consumer figures once."""
        async with httpx.AsyncClient(timeout=5) as http:
            for service in SERVICES:
                for instance in live_instances(self._settings, service):
                    body = await self._health(http, f"{instance.url}/health")
                    consumer = body.get("consumer") or {}
                    if "applied" in consumer:
                        self._current[instance.name] = int(consumer["applied"])

    async def _health(self, http: httpx.AsyncClient, url: str) -> dict[str, Any]:
        try:
            response = await http.get(
                url, headers={"Authorization": f"Bearer {self._settings.token_administrator}"}
            )
            body = response.json()
        except (httpx.HTTPError, ValueError):
            return {}  # being killed or started: the next poll reads it
        return body if isinstance(body, dict) else {}
