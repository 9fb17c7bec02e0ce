"""The notifier against the simulated integration, through dwsim's pytest plugin only.

There is no conftest.py: `dwsim` (one test's part of the running stack) comes from the plugin
that installing dwsim registers. Every wait has a deadline; every test ends reconciled.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from invoice_notifier.consumer import InvoiceNotifier
from invoice_notifier.store import Notification, NotificationStore


@pytest.fixture
async def notifier(dwsim, tmp_path: Path) -> AsyncIterator[InvoiceNotifier]:
    """The notifier, running on the stack's broker with a database of its own."""
    store = NotificationStore(tmp_path / "notifications.sqlite")
    running = InvoiceNotifier(
        dwsim.bootstrap_servers,
        dwsim.topic("invoice-posted"),
        f"invoice-notifier-{uuid.uuid4().hex[:8]}",
        store,
    )
    await running.start()
    yield running
    await running.stop()
    store.close()


async def until_notified(
    notifier: InvoiceNotifier, invoice_id: str, deadline_s: float = 90
) -> Notification:
    """The notification of an invoice, once the notifier made it."""
    return await _until(
        lambda: notifier.store.of(invoice_id), f"notification of {invoice_id}", deadline_s
    )


async def _until(
    check: Callable[[], Notification | None], what: str, deadline_s: float
) -> Notification:
    end = time.monotonic() + deadline_s
    while (found := check()) is None:
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)
    return found


async def test_a_posted_invoice_is_notified_once_with_finances_number_and_total(
    dwsim, notifier: InvoiceNotifier
) -> None:
    entity = await dwsim.legal_entity(currency="USD")
    customer = await dwsim.customer(entity, "Contoso")
    contract = await dwsim.time_and_material_contract(customer)
    await dwsim.approve_time(contract, hours=8, bill_rate="200")
    invoice = await dwsim.confirmed_invoice(contract)

    posted = await dwsim.post_invoice(invoice)
    event = await dwsim.until_event("invoice-posted", invoice)
    notification = await until_notified(notifier, invoice.invoice_id)

    assert event["payload"]["customer_invoice_number"] == posted["invoice_number"]
    assert notification.invoice_number == posted["invoice_number"]
    assert str(notification.total_amount) == str(posted["total_amount"])
    assert notification.legal_entity == entity.legal_entity_id
    assert [n.invoice_id for n in notifier.store.notifications()].count(invoice.invoice_id) == 1
    await dwsim.assert_reconciled()


async def test_while_finance_is_down_and_the_map_paused_nothing_is_notified_then_once(
    dwsim, notifier: InvoiceNotifier
) -> None:
    entity = await dwsim.legal_entity(currency="EUR")
    contract = await dwsim.fixed_price_contract(
        await dwsim.customer(entity, "Fabrikam"), milestones=["5000", "2500"]
    )
    # Finance goes down; the administrator pauses the proposal map until it is back.
    dwsim.stop_service("finance")
    await dwsim.pause_map("invoices")
    invoice = await dwsim.confirmed_invoice(contract)
    await dwsim.until_queued(1)
    dwsim.start_service("finance")
    # Finance is back, the map still paused: the header waits in the queue, a difference with
    # a known cause, and there is nothing to notify.
    with pytest.raises(AssertionError, match=r"queued: map .* is paused") as failure:
        await dwsim.assert_reconciled()
    assert "confirmed invoice has no proposal" in str(failure.value)
    report = await dwsim.assert_reconciled(allow_explained=True)
    assert [d.kind for d in report.differences] == ["confirmed invoice has no proposal"]
    assert notifier.store.of(invoice.invoice_id) is None

    assert await dwsim.resume_map("invoices") == "running"
    posted = await dwsim.post_invoice(invoice)
    notification = await until_notified(notifier, invoice.invoice_id)

    assert notification.invoice_number == posted["invoice_number"]
    assert str(notification.total_amount) == "7500.00"
    await dwsim.assert_reconciled()


async def test_after_the_broker_restarts_empty_replayed_events_are_not_notified_twice(
    dwsim, notifier: InvoiceNotifier
) -> None:
    entity = await dwsim.legal_entity(currency="USD")
    contract = await dwsim.time_and_material_contract(await dwsim.customer(entity, "Litware"))
    await dwsim.approve_time(contract, hours=6)
    first = await dwsim.confirmed_invoice(contract)
    await dwsim.post_invoice(first)
    await until_notified(notifier, first.invoice_id)

    await dwsim.restart_broker_empty()
    # The operator's recovery: every service's consumer rewound to the new log's beginning,
    # then every service publishes its events of this test again; the notifier's offsets are
    # gone with the broker, so it reads the replayed event once more.
    replayed = await dwsim.recover_lost_log()
    assert replayed["finance"] > 0

    await dwsim.approve_time(contract, hours=4)
    second = await dwsim.confirmed_invoice(contract)
    await dwsim.post_invoice(second)
    await until_notified(notifier, second.invoice_id)
    await _until(
        lambda: notifier.store.of(first.invoice_id) if notifier.duplicates_ignored else None,
        "the replayed invoice-posted of the first invoice to arrive and be ignored",
        90,
    )

    mine = [n.invoice_id for n in notifier.store.notifications()]
    assert mine.count(first.invoice_id) == 1 and mine.count(second.invoice_id) == 1
    await dwsim.assert_reconciled()
