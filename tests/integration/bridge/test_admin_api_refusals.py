"""The bridge admin API refuses, with a 4xx and the reason, what used to answer 500 (issue 18)."""

from __future__ import annotations

import pytest

from services.common.settings import Settings
from tests.integration.bridge.bridge_harness import (
    BridgeProcess,
    FakeTarget,
    Publisher,
    Received,
    invoice_confirmed,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


async def test_retry_of_a_record_already_queued_while_its_map_is_paused_is_409(
    settings: Settings, bridge: BridgeProcess
) -> None:
    def refuse(_: Received) -> str | None:
        return "no line property for billing type Chargeable"

    async with FakeTarget(settings, policy=refuse), Publisher(settings) as dataverse:
        await dataverse.confirm(invoice_confirmed())

        async def one_error() -> bool:
            return len(await bridge.get("/errors", status="open")) == 1

        await wait_for(one_error, what="one open error")
    [error] = await bridge.get("/errors")
    assert (await bridge.post("/maps/invoices/pause")).status_code == 200
    first = await bridge.post(f"/errors/{error['id']}/retry")
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "queued"
    again = await bridge.post(f"/errors/{error['id']}/retry")
    assert again.status_code == 409, again.text
    assert "queued already" in again.json()["detail"]
    queue = await bridge.get("/maps/invoices/queue")
    assert queue["count"] == 1  # still queued once


async def test_error_id_beyond_bigint_is_422_not_a_server_error(bridge: BridgeProcess) -> None:
    response = await bridge.post("/errors/99999999999999999999999/retry")
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["path", "error_id"]


async def test_undeclared_query_parameter_is_422_not_silently_ignored(
    bridge: BridgeProcess,
) -> None:
    async with bridge.client() as http:
        misspelt = await http.get("/errors", params={"stauts": "open"})
        known = await http.get("/errors", params={"status": "open"})
    assert misspelt.status_code == 422, misspelt.text
    assert "stauts" in misspelt.text
    assert known.status_code == 200, known.text
