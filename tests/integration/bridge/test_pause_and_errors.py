"""Pause and catch-up, the error queue, retries, and data errors that must not pause a map."""

from __future__ import annotations

from collections import defaultdict
from typing import Any
from uuid import uuid4

import pytest

from schemas.topics import Topic
from services.bridge.table_maps import ACTUALS_MAP_NAME
from services.common.settings import Settings
from tests.integration.bridge.bridge_harness import (
    BridgeProcess,
    FakeTarget,
    Publisher,
    Received,
    TopicReader,
    actual_created,
    invoice_confirmed,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


async def _records(bridge: BridgeProcess, **params: Any) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await bridge.get("/records", **params)
    return result


async def test_paused_map_queues_500_records_in_order_and_resume_delivers_all_in_order(
    settings: Settings, bridge: BridgeProcess
) -> None:
    response = await bridge.post("/maps/actuals/pause")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "paused"
    invoices = [invoice_confirmed().invoice_id for _ in range(5)]
    published: dict[str, list[str]] = defaultdict(list)
    async with Publisher(settings) as dataverse:
        for n in range(500):
            actual = actual_created(invoice_id=invoices[n % 5])
            published[str(actual.invoice_id)].append(str(actual.actual_id))
            await dataverse.actual(actual)
        await dataverse.flush()

    async def all_queued() -> bool:
        return (await bridge.get("/maps/actuals/queue"))["count"] == 500

    await wait_for(all_queued, 60, what="500 queued records")
    queue = await bridge.get("/maps/actuals/queue", limit=500)
    assert queue["state"] == "paused"
    assert queue["bytes"] > 0 and queue["oldest"] is not None
    # The queue keeps each invoice's actuals in the order they were published.
    queued_by_invoice: dict[str, list[str]] = defaultdict(list)
    for entry in queue["records"]:
        queued_by_invoice[entry["invoice_id"]].append(entry["record_key"])
    assert queued_by_invoice == published
    stats = (await bridge.get("/stats"))[ACTUALS_MAP_NAME]
    assert stats["queued"] == 500 and stats["forwarded"] == 0
    async with TopicReader(settings, Topic.FO_ACTUALS_STAGING) as finance:
        # Nothing left while paused: the staging topic is read on every partition to the
        # high-water mark a fetch reported after all 500 were queued, and holds nothing.
        assert await finance.read_to_high_water() == []

        # The target refuses one record during catch-up: it lands in the catch-up error list.
        refused_id = published[str(invoices[2])][10]

        def refuse_one(message: Received) -> str | None:
            if message.value["payload"]["msdyn_actualid"] == refused_id:
                return "line property missing for billing type Chargeable"
            return None

        async with FakeTarget(settings, policy=refuse_one):
            response = await bridge.post("/maps/actuals/resume")
            assert response.status_code == 200, response.text
            assert response.json()["state"] in ("resuming", "running")
            delivered = await finance.until(lambda ms: len(ms) >= 500, 60, what="500 staged")

            async def settled() -> bool:
                s = (await bridge.get("/stats"))[ACTUALS_MAP_NAME]
                return s["synced"] == 499 and s["failed"] == 1

            await wait_for(settled, 60, what="499 synced and 1 failed")
    by_invoice: dict[str, list[str]] = defaultdict(list)
    for message in delivered:
        assert message.key is not None
        by_invoice[message.key].append(message.value["payload"]["msdyn_actualid"])
    assert by_invoice == published  # nothing lost, nothing twice, each invoice in order
    assert (await bridge.get("/maps/actuals"))["state"] == "running"
    activity = list(reversed(await bridge.get("/activity", map="actuals", limit=1000)))
    changes = [a["message"].split(" ")[:3] for a in activity if a["kind"] == "state_changed"]
    assert ["running", "->", "paused"] in changes
    assert ["paused", "->", "resuming"] in changes
    assert ["resuming", "->", "running"] in changes
    kinds = [a["kind"] for a in activity]
    assert kinds.index("catch_up_started") < kinds.index("catch_up_finished")
    [catch_up_error] = await bridge.get("/errors", map="actuals", catch_up="true")
    assert catch_up_error["record_key"] == refused_id
    assert "line property missing" in catch_up_error["reason"]
    assert await bridge.get("/errors", map="actuals", catch_up="false") == []


async def test_ten_actuals_of_an_unknown_legal_entity_are_ten_errors_and_the_map_runs_on(
    settings: Settings, bridge: BridgeProcess
) -> None:
    # Regression: one actuals-created message of ten actuals of a legal entity Finance does not
    # know gave ten errors, which the seeded rule (10 errors in 15 minutes, of any type) took
    # for Finance being down: it paused the actuals map and the next invoices queued.
    def finance(message: Received) -> str | None:
        record = message.value["payload"]
        entity, actual = record["msdyn_legalentity"], record["msdyn_actualid"]
        return None if entity == "USPM" else f"unknown legal entity {entity} on actual {actual}"

    invoice, project = uuid4(), uuid4()
    bad = [
        actual_created(legal_entity="ZZPM", invoice_id=invoice, project_id=project)
        for _ in range(10)
    ]
    async with FakeTarget(settings, policy=finance), Publisher(settings) as dataverse:
        await dataverse.actual(*bad)

        async def ten_errors() -> bool:
            return len(await bridge.get("/errors", map="actuals")) >= 10

        await wait_for(ten_errors, what="ten errors on the actuals map")
        errors = await bridge.get("/errors", map="actuals")
        # Each error is recorded with the rules evaluated in its transaction: the tenth seen
        # means the seeded rule has seen all ten.
        assert len(errors) == 10
        assert {e["error_type"] for e in errors} == {"target_refused"}
        assert {e["record_key"] for e in errors} == {str(a.actual_id) for a in bad}
        assert all("unknown legal entity ZZPM" in e["reason"] for e in errors)
        assert (await bridge.get("/maps/actuals"))["state"] == "running"
        assert await bridge.get("/activity", map="actuals", kind="alert_fired") == []

        # The next actual is sent at once, not queued behind a paused map.
        good = actual_created(invoice_id=uuid4())
        await dataverse.actual(good)

        async def synced() -> bool:
            records = await _records(bridge, map="actuals", status="synced")
            return str(good.actual_id) in {r["record_key"] for r in records}

        await wait_for(synced, what="the valid actual after the bad ones synced")
    rules = await bridge.get("/alert-rules")
    assert {(r["error_type"], r["error_count"], r["action"]) for r in rules} == {
        ("timeout", 10, "pause")
    }


async def test_retrying_a_fixed_error_succeeds(settings: Settings, bridge: BridgeProcess) -> None:
    fixed = False

    def line_property(_: Received) -> str | None:
        return None if fixed else "no line property for billing type Chargeable"

    invoices = [invoice_confirmed() for _ in range(3)]
    async with FakeTarget(settings, policy=line_property), Publisher(settings) as dataverse:
        for invoice in invoices:
            await dataverse.confirm(invoice)

        async def three_errors() -> bool:
            return len(await bridge.get("/errors", status="open")) == 3

        await wait_for(three_errors, what="three open errors")
        [first, *_] = await bridge.get("/errors")
        [record] = await _records(bridge, invoice_id=first["invoice_id"])
        assert record["status"] == "failed"
        assert record["reason"] == "finance refused: no line property for billing type Chargeable"
        fixed = True  # the setup is fixed on the Finance side
        response = await bridge.post(f"/errors/{first['id']}/retry")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "pending"

        async def synced(invoice_id: str) -> bool:
            return [r["status"] for r in await _records(bridge, invoice_id=invoice_id)] == [
                "synced"
            ]

        await wait_for(lambda: synced(first["invoice_id"]), what="the retried record synced")
        response = await bridge.post("/errors/retry-all", map="invoices")
        assert response.status_code == 200, response.text
        assert response.json()["retried"] == 2
        for invoice in invoices:
            await wait_for(lambda i=invoice: synced(str(i.invoice_id)), what="retry-all synced")
    errors = await bridge.get("/errors")
    assert [e["status"] for e in errors] == ["resolved"] * 3
    again = await bridge.post(f"/errors/{first['id']}/retry")
    assert again.status_code == 409 and "resolved already" in again.json()["detail"]
    record = await bridge.get(f"/records/{record['record_id']}")
    assert record["attempts"] == 2
    kinds = [a["kind"] for a in await bridge.get("/activity", map="invoices")]
    assert kinds.count("retry") == 3 and "error_resolved" in kinds


async def test_paused_queue_past_its_limit_refuses_new_records_visibly(
    settings: Settings, start_bridge: Any
) -> None:
    bridge = start_bridge(DWSIM_QUEUE_MAX_BYTES="900")  # two headers of ~500 bytes
    await bridge.wait_ready()
    assert (await bridge.post("/maps/invoices/pause")).status_code == 200
    invoices = [invoice_confirmed() for _ in range(4)]
    async with Publisher(settings) as dataverse:
        for invoice in invoices:  # one key, one partition: arrival order is publish order
            await dataverse.send(
                Topic.INVOICE_CONFIRMED, "one-key", invoice, "invoice.confirmed", "dataverse"
            )

    async def all_seen() -> bool:
        return len(await _records(bridge)) == 4

    await wait_for(all_seen, what="four records")
    statuses = [r["status"] for r in await _records(bridge)]
    assert statuses == ["queued", "queued", "failed", "failed"], statuses
    failed = await _records(bridge, status="failed")
    assert all(r["reason"].startswith("queue limit reached") for r in failed)
    errors = await bridge.get("/errors", map="invoices")
    assert {e["error_type"] for e in errors} == {"queue_limit"}
    queued = (await bridge.get("/maps/invoices/queue"))["count"]
    assert queued == statuses.count("queued") and queued + len(failed) == 4
