"""PostgreSQL crashing under a running stack: every service stays up and the flow completes.

Regression test of issue 18, item 2: a SIGKILL of the postmaster used to end Finance (its
outbox relay died on the lost leader session) and the bridge (an agent crashed on asyncpg's
`InternalClientError`) within a fraction of a second, and they stayed down until a person ran
`dwsim up` again. Here PostgreSQL goes away twice with work in flight — a SIGKILL of the
postmaster while actuals travel, an immediate shutdown while invoices do — and comes back on
its own port; nobody touches a service.
"""

from __future__ import annotations

import asyncio
import os
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.processes import pid_alive
from services.common.settings import SERVICES, Settings
from services.simulator.clients import Services
from services.simulator.demo import DemoRun, new_progress
from services.simulator.faults import PostgresCrash, crash_postgres, start_postgres_again
from services.simulator.processes import log_path, service_status
from services.simulator.reconcile import reconcile
from services.simulator.seed import plan_demo
from services.simulator.snapshot import fetch_snapshot
from tests.e2e.conftest import run_dwsim
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

BUSINESS_DATE = date(2026, 10, 1)


def test_every_service_survives_postgresql_crashing_mid_flow(dwsim_home: Path) -> None:
    if os.environ.get("DWSIM_DATABASE_URL"):
        pytest.skip("needs the local PostgreSQL: a configured server is not ours to kill")
    up = run_dwsim(dwsim_home, "up", timeout=180)
    assert up.returncode == 0, (up.stdout + up.stderr)[-4000:]
    settings = Settings(home=dwsim_home)
    pids = {name: service_status(settings, name).pid for name in SERVICES}
    assert all(pids.values()), pids
    asyncio.run(_flow(settings, pids))


async def _flow(settings: Settings, pids: dict[str, int | None]) -> None:
    services = Services(settings)
    plan = plan_demo(seed=18, invoices=6, business_date=BUSINESS_DATE)
    try:
        with new_progress() as progress:
            run = DemoRun(services, plan, progress, deadline_s=60)
            await run.setup()
            await run.approve_entries()
            # The actuals are on their way: Dataverse's relay, the bridge, Finance's consumer.
            await _outage(settings, pids, "sigkill")
            await run.sync_and_post_journals()
            await run.invoice(limit=3)
            # Three invoices confirmed a moment ago: their headers and billed sales in flight.
            await _outage(settings, pids, "immediate")
            await run.invoice()
            await run.import_proposal_lines()
            await run.post_proposals()
            await run.wait_accounting_back()
        report = reconcile(await fetch_snapshot(services))
        assert report.agree, [d.to_json() for d in report.differences]
        # Every actual Dataverse syncs is in Finance's staging, and nothing else is.
        actuals = await services.dataverse.get("/actuals")
        synced = sorted(str(a["actual_id"]) for a in actuals if not a["skip_sync"])
        staged = sorted(str(r["actual_id"]) for r in await services.finance.get("/staging"))
        assert staged == synced, (len(staged), len(synced))
        # A lost connection is retried, never parked as the event's fault.
        for client in (services.dataverse, services.finance, services.bridge):
            parked = await client.call("GET", "/parked-events", token=settings.token_administrator)
            assert parked == [], (client.service, parked)
        assert await services.bridge.get("/errors", status="open") == []
        # Each service saw both outages and said so on /health.
        for name in SERVICES:
            _, body = await _health(settings, name)
            assert body["database_connection"]["outages"] >= 2, (name, body)
    finally:
        await services.close()
    _assert_same_processes(settings, pids)


async def _outage(settings: Settings, pids: dict[str, int | None], crash: PostgresCrash) -> None:
    """Crash PostgreSQL, see every service report it while staying up, bring it back."""
    old_pid, port = crash_postgres(settings, crash)

    answers: dict[str, int] = {}

    async def all_report_down() -> bool:
        answers.update({name: (await _health(settings, name))[0] for name in SERVICES})
        _assert_same_processes(settings, pids)
        return all(status == 503 for status in answers.values())

    try:
        await wait_for(all_report_down, 20, f"every service to report the database down ({crash})")
    except AssertionError as exc:
        _assert_same_processes(settings, pids)  # a service gone says more than its answer
        raise AssertionError(f"{exc}; /health answered {answers}") from exc
    await start_postgres_again(settings, old_pid, port)

    async def all_recovered() -> bool:
        answers = [await _health(settings, name) for name in SERVICES]
        _assert_same_processes(settings, pids)
        return all(
            status == 200 and body.get("database_connection", {}).get("state") == "up"
            for status, body in answers
        )

    await wait_for(all_recovered, 30, f"every service to be back on the database ({crash})")


async def _health(settings: Settings, name: str) -> tuple[int, dict[str, Any]]:
    url = service_status(settings, name).url
    if url is None:
        return 0, {}  # gone: the callers' process check says how
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.get(
                f"{url}/health",
                headers={"Authorization": f"Bearer {settings.token_administrator}"},
            )
    except httpx.HTTPError:
        return 0, {}
    try:
        body = response.json()
    except ValueError:
        body = {}
    return response.status_code, body if isinstance(body, dict) else {}


def _assert_same_processes(settings: Settings, pids: dict[str, int | None]) -> None:
    """Every service still runs in the process it started in: none died, none restarted."""
    for name, pid in pids.items():
        if pid is None or not pid_alive(pid):
            log = log_path(settings, name)
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
            raise AssertionError(f"{name} (pid {pid}) is gone; its log ends:\n{tail}")
        assert service_status(settings, name).pid == pid, f"{name} was restarted"
