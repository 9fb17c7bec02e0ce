"""The administrator edits a map's alert rule through the bridge's API (issue 21): a sensible
change is stored, logged and obeyed; nonsense is 422 and changes nothing."""

from __future__ import annotations

from typing import Any

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


async def _invoices_rule(bridge: BridgeProcess) -> dict[str, Any]:
    rules = await bridge.get("/alert-rules")
    [rule] = [r for r in rules if r["map_name"].startswith("Project invoice proposal")]
    return rule


async def _put(bridge: BridgeProcess, rule_id: int, body: Any) -> Any:
    async with bridge.client() as http:
        return await http.put(f"/alert-rules/{rule_id}", json=body)


NONSENSE: list[dict[str, Any]] = [
    {"error_type": "target_refused", "count": 0, "window_s": 60, "action": "pause"},
    {"error_type": "target_refused", "count": 3, "window_s": 0, "action": "pause"},
    {"error_type": "target_refused", "count": 3, "window_s": -5, "action": "pause"},
    {"error_type": "target_refused", "count": 3, "window_s": 1e12, "action": "pause"},
    {"error_type": "any", "count": 3, "window_s": 60, "action": "pause"},
    {"error_type": "timeout", "count": 3, "window_s": 60, "action": "explode"},
    {"error_type": "timeout", "count": "many", "window_s": 60, "action": "pause"},
    {"error_type": "timeout", "count": 3, "window_s": 60},
    {"error_type": "timeout", "count": 3, "window_s": 60, "action": "pause", "x": 1},
]


async def test_nonsense_is_422_and_changes_nothing(bridge: BridgeProcess) -> None:
    # Every body on one bridge: each is refused before anything is written, so one body
    # cannot prepare the next, and a worker per body cost ~6 s of start each.
    before = await bridge.get("/alert-rules")
    rule = await _invoices_rule(bridge)
    for body in NONSENSE:
        response = await _put(bridge, rule["id"], body)
        assert response.status_code == 422, (body, response.text)
        assert await bridge.get("/alert-rules") == before, body
        assert await bridge.get("/activity", kind="alert_rule_changed") == [], body


async def test_unknown_rule_is_404(bridge: BridgeProcess) -> None:
    response = await _put(
        bridge, 987654, {"error_type": "timeout", "count": 3, "window_s": 60, "action": "pause"}
    )
    assert response.status_code == 404, response.text


async def test_edited_rule_is_stored_logged_and_fires(
    settings: Settings, bridge: BridgeProcess
) -> None:
    rule = await _invoices_rule(bridge)
    assert (rule["error_type"], rule["action"]) == ("timeout", "pause")
    response = await _put(
        bridge,
        rule["id"],
        {"error_type": "target_refused", "count": 1, "window_s": 600, "action": "pause"},
    )
    assert response.status_code == 200, response.text
    changed = await _invoices_rule(bridge)
    assert (changed["error_type"], changed["error_count"], changed["window_s"]) == (
        "target_refused",
        1,
        600,
    )
    [logged] = await bridge.get("/activity", kind="alert_rule_changed")
    assert "10 timeout errors in 900 s -> pause" in logged["message"]
    assert "1 target_refused errors in 600 s -> pause" in logged["message"]

    # The default rule counts time-outs only; the edited one pauses on the first refusal.
    def refuse(_: Received) -> str | None:
        return "no line property for billing type Chargeable"

    async with FakeTarget(settings, policy=refuse), Publisher(settings) as dataverse:
        await dataverse.confirm(invoice_confirmed())

        async def paused() -> bool:
            return (await bridge.get("/maps/invoices"))["state"] == "paused"

        await wait_for(paused, what="the edited rule to pause the invoices map")
