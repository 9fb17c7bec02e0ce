"""One invoice's flow is one W3C trace: the same trace id in the `traceparent` header of its
events on every topic it crosses (read from the broker) and in its log lines in all three
services (read from their log files)."""

from __future__ import annotations

import json
import re

import pytest

from services.common.tracing import parse_traceparent
from services.simulator.harness import DwsimTest
from services.simulator.processes import log_path
from services.simulator.topic_reader import read_to_end
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

SERVICES = ("dataverse", "finance", "bridge")
# confirm → header → staging → receipts → posting → accounting detail, and back.
TOPICS = (
    "invoice-confirmed",
    "actuals-created",
    "fo-invoice-proposals",
    "fo-actuals-staging",
    "sync-receipts",
    "invoice-posted",
    "dv-actuals-accounting",
)


async def traces_by_topic(dwsim: DwsimTest, invoice_id: str) -> dict[str, set[str | None]]:
    """The trace ids of the invoice's events on each topic (None: an event without a valid
    `traceparent` header); an event is the invoice's when its correlation id is the invoice's."""
    seen: dict[str, set[str | None]] = {}
    for topic in TOPICS:
        for record in await read_to_end(dwsim.settings, dwsim.topic(topic)):
            envelope = json.loads(record.value)
            if envelope.get("correlation_id") != invoice_id:
                continue
            header = dict(record.headers or ()).get("traceparent")
            parsed = parse_traceparent(header)
            seen.setdefault(topic, set()).add(parsed.trace_id if parsed else None)
    return seen


def log_lines(dwsim: DwsimTest, service: str, invoice_id: str) -> list[str]:
    """The service's log lines about the invoice (its id as `invoice_id`; a line about a run
    over many invoices, naming it in a list, is the run's), from its confirmation on (drafting
    the proforma is a request of its own, before the flow's trace starts)."""
    text = log_path(dwsim.settings, service).read_text(errors="replace")
    about = re.compile(rf"\binvoice_id\W{{1,3}}{invoice_id}\b")
    lines = [line for line in text.splitlines() if about.search(line)]
    confirmed = [i for i, line in enumerate(lines) if "invoice_confirmed" in line]
    return lines[confirmed[0] :] if confirmed else lines


def trace_ids_in(lines: list[str]) -> set[str | None]:
    """The trace id each line carries (console `trace_id=…` or JSON), None for a line without."""
    found: set[str | None] = set()
    for line in lines:
        match = re.search(r"\btrace_id\W{1,3}([0-9a-f]{32})", line)
        found.add(match.group(1) if match else None)
    return found


async def test_one_invoice_is_one_trace_across_topics_and_logs(dwsim: DwsimTest) -> None:
    invoice = await dwsim.confirmed_invoice()
    await dwsim.post_journals()
    await dwsim.post_invoice(invoice)
    await dwsim.until_event("invoice-posted", invoice)
    await dwsim.assert_reconciled()
    invoice_id = invoice.invoice_id

    seen: dict[str, set[str | None]] = {}

    async def every_topic_seen() -> bool:
        seen.clear()
        seen.update(await traces_by_topic(dwsim, invoice_id))
        return set(seen) == set(TOPICS)

    await wait_for(every_topic_seen, 60, "the invoice's events on every topic")
    trace_ids = set().union(*seen.values())
    assert len(trace_ids) == 1 and None not in trace_ids, seen
    (trace_id,) = trace_ids

    for service in SERVICES:
        lines = log_lines(dwsim, service, invoice_id)
        assert lines, f"{service} logged nothing for invoice {invoice_id}"
        assert trace_ids_in(lines) == {trace_id}, (service, lines)
