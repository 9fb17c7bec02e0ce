"""`DWSIM_LOG_FORMAT=json`: every line a process writes is JSON, its libraries' lines too.

The bridge runs with faust's log level at INFO so that faust, mode and aiokafka do write lines
of their own (at the default WARNING they are mostly quiet and the test would prove little);
Finance runs a plain aiokafka consumer under uvicorn.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from services.common.settings import Settings
from tests.integration.bridge.bridge_harness import BridgeProcess, Publisher, invoice_confirmed
from tests.integration.bridge.conftest import StartBridge
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def json_lines(log_path: Path) -> list[dict[str, object]]:
    """Every line of the log as JSON; fails naming the first line that is not."""
    lines = log_path.read_text().splitlines()
    assert lines, f"{log_path} is empty"
    parsed = []
    for number, line in enumerate(lines, 1):
        try:
            document = json.loads(line)
        except ValueError:
            pytest.fail(f"{log_path.name} line {number} is not JSON: {line[:300]!r}")
        assert isinstance(document, dict), line
        parsed.append(document)
    return parsed


async def test_every_line_of_the_bridge_and_finance_is_json_libraries_included(
    start_bridge: StartBridge, settings: Settings, tmp_path: Path
) -> None:
    bridge = start_bridge(DWSIM_LOG_FORMAT="json", DWSIM_FAUST_LOGLEVEL="INFO")
    finance = BridgeProcess(
        settings, tmp_path / "finance.log", service="finance", DWSIM_LOG_FORMAT="json"
    ).start()
    try:
        await bridge.wait_ready(60)
        await finance.wait_ready(60)
        invoice = invoice_confirmed()
        async with Publisher(settings) as publisher:
            await publisher.confirm(invoice)

        async def forwarded() -> bool:
            records = await bridge.get("/records", invoice_id=str(invoice.invoice_id))
            return bool(records)

        await wait_for(forwarded, 30, "the bridge to map the confirmed invoice")
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(f"{finance.url}/no-such-page")).status_code == 404
            assert (await http.get(f"{bridge.url}/metrics")).status_code == 200
    finally:
        bridge.stop()
        finance.stop()

    bridge_lines = json_lines(bridge.log_path)
    finance_lines = json_lines(finance.log_path)
    # The libraries' own lines are among them, rendered like ours.
    loggers = {str(line.get("logger", "")) for line in bridge_lines}
    assert any(name.split(".")[0] in {"faust", "mode", "aiokafka"} for name in loggers), loggers
    assert all("event" in line and "timestamp" in line for line in bridge_lines)
    events = {line["event"] for line in bridge_lines + finance_lines}
    assert {"service_started", "service_stopped"} <= events
    assert {line.get("service") for line in finance_lines} == {"finance"}
