"""The bridge record's lifecycle (services/bridge/records.py): mapping, arrival, receipts,
time-outs and retries, each through the status rules. Pure: no I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from schemas.receipts import ReceiptOutcome, SyncReceipt
from services.bridge.domain import (
    NOT_SYNCED_MAP_STOPPED,
    BridgeRuleError,
    MapState,
    QueueLimits,
    RecordStatus,
    SyncStatus,
)
from services.bridge.mapping import (
    legs_for_topic,
)
from services.bridge.records import (
    BridgeRecord,
    QueueFigures,
    arrive,
    count_filtered,
    on_receipt,
    records_of_event,
    remap,
    time_out_reason,
)
from services.bridge.table_maps import PROPOSAL_MAP, TABLE_MAPS

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LIMITS = QueueLimits(max_age=timedelta(hours=1), max_size_bytes=10_000)
EMPTY = QueueFigures(count=0, bytes=0, oldest=None)


def header(**overrides: object) -> dict[str, object]:
    values: dict[str, object] = {
        "invoice_id": str(uuid4()),
        "invoice_number": "PINV-0001",
        "legal_entity": "USPM",
        "customer_id": str(uuid4()),
        "customer_name": "Adventure Works",
        "contract_id": str(uuid4()),
        "currency": "USD",
        "invoice_date": "2026-11-30",
        "total_amount": "100",
        "tax_amount": "0",
        "payment_terms": "Net30",
        "expected_billed_lines": 1,
        "is_corrective": False,
    }
    values.update(overrides)
    return values


def mapped(**overrides: object) -> BridgeRecord:
    pairs = legs_for_topic(TABLE_MAPS, "invoice-confirmed")
    [record] = records_of_event(
        pairs, "invoice-confirmed", uuid4(), None, header(**overrides), None
    )
    return record


def receipt(
    record: BridgeRecord, outcome: ReceiptOutcome, reason: str | None = None
) -> SyncReceipt:
    return SyncReceipt(
        map_name=record.map_name,
        record_key=record.record_key,
        source_event_id=record.record_id,
        outcome=outcome,
        reason=reason,
        target="finance",
        answers_event_id=uuid4(),
    )


def test_a_mapped_source_event_is_a_pending_record_with_its_payload_and_invoice() -> None:
    source = header()
    record = mapped(invoice_id=source["invoice_id"])
    assert record.status is SyncStatus.PENDING and record.reason is None
    assert record.map_name == PROPOSAL_MAP.name
    assert record.invoice_id == record.correlation_id == source["invoice_id"]
    assert record.payload is not None and record.record_key == source["invoice_id"]


def test_an_unmappable_source_event_is_a_failed_record_with_the_reason() -> None:
    record = mapped(currency="USDOLLAR")
    assert record.status is SyncStatus.FAILED
    assert record.reason is not None and "CurrencyCode" in record.reason
    assert record.payload is None


def test_a_failed_record_without_a_reason_cannot_exist() -> None:
    record = mapped()
    with pytest.raises(BridgeRuleError, match="needs a reason"):
        replace(record, status=SyncStatus.FAILED, reason=None)
    with pytest.raises(BridgeRuleError, match="needs a reason"):
        record.fails("")
    with pytest.raises(BridgeRuleError, match="takes no reason"):
        replace(record, status=SyncStatus.PENDING, reason="why")


@pytest.mark.parametrize(
    ("state", "status", "reason"),
    [
        (MapState.RUNNING, SyncStatus.PENDING, None),
        (MapState.PAUSED, SyncStatus.QUEUED, None),
        (MapState.RESUMING, SyncStatus.QUEUED, None),
        (MapState.INITIALIZING, SyncStatus.QUEUED, None),
        (MapState.NOT_RUNNING, SyncStatus.NOT_SYNCED, NOT_SYNCED_MAP_STOPPED),
    ],
)
def test_arrival_follows_the_map_state(
    state: MapState, status: SyncStatus, reason: str | None
) -> None:
    arrived = arrive(mapped(), state, EMPTY, LIMITS, NOW)
    assert (arrived.status, arrived.reason) == (status, reason)


def test_arrival_past_the_queue_size_cap_fails_with_the_queue_limit_reason() -> None:
    full = QueueFigures(count=3, bytes=10_000, oldest=NOW)
    arrived = arrive(mapped(), MapState.PAUSED, full, LIMITS, NOW)
    assert arrived.status is SyncStatus.FAILED
    assert arrived.reason is not None and arrived.reason.startswith("queue limit reached")


def test_arrival_past_the_queue_age_cap_fails_even_with_room_left() -> None:
    old = QueueFigures(count=1, bytes=10, oldest=NOW - timedelta(hours=1))
    arrived = arrive(mapped(), MapState.RESUMING, old, LIMITS, NOW)
    assert arrived.status is SyncStatus.FAILED


def test_arrival_at_a_queueing_map_needs_the_queue_figures() -> None:
    with pytest.raises(BridgeRuleError, match="queue is needed"):
        arrive(mapped(), MapState.PAUSED, None, LIMITS, NOW)
    assert arrive(mapped(), MapState.RUNNING, None, LIMITS, NOW).status is SyncStatus.PENDING


def test_queue_figures_grow_by_the_record_that_joined() -> None:
    record = mapped()
    after = EMPTY.plus(record, NOW)
    assert after == QueueFigures(1, record.queue_bytes, NOW)
    assert after.plus(record, NOW + timedelta(1)).oldest == NOW


def test_applied_receipt_syncs_a_pending_or_failed_record_and_nothing_else() -> None:
    pending = mapped()
    synced = on_receipt(pending, receipt(pending, ReceiptOutcome.APPLIED))
    assert synced is not None and synced.status is SyncStatus.SYNCED and synced.reason is None
    failed = pending.fails("finance refused: period closed")
    again = on_receipt(failed, receipt(failed, ReceiptOutcome.APPLIED))
    assert again is not None and again.status is SyncStatus.SYNCED
    assert on_receipt(synced, receipt(synced, ReceiptOutcome.APPLIED)) is None


def test_rejection_fails_a_pending_record_with_the_targets_reason() -> None:
    pending = mapped()
    failed = on_receipt(pending, receipt(pending, ReceiptOutcome.REJECTED, "period closed"))
    assert failed is not None and failed.status is SyncStatus.FAILED
    assert failed.reason == "finance refused: period closed"
    unexplained = on_receipt(pending, receipt(pending, ReceiptOutcome.REJECTED))
    assert unexplained is not None and unexplained.reason == "finance refused: no reason given"


def test_rejection_of_a_record_no_longer_pending_changes_nothing() -> None:
    synced = replace(mapped(), status=SyncStatus.SYNCED)
    assert on_receipt(synced, receipt(synced, ReceiptOutcome.REJECTED, "late")) is None


def test_only_the_first_time_out_of_a_pending_record_counts_as_an_error() -> None:
    first = replace(mapped(), attempts=1)
    reason = time_out_reason(first, timedelta(seconds=30))
    assert reason is not None and "no receipt for" in reason and "within 30 s" in reason
    assert time_out_reason(replace(first, attempts=2), timedelta(seconds=30)) is None
    with pytest.raises(BridgeRuleError, match="not pending"):
        time_out_reason(replace(first, status=SyncStatus.SYNCED), timedelta(seconds=30))


def test_retry_maps_the_record_again_from_its_source_record() -> None:
    failed = mapped().fails("finance refused: period closed")
    again = remap(failed, PROPOSAL_MAP)
    assert again.status is SyncStatus.PENDING and again.reason is None
    broken = replace(failed, source_record={**(failed.source_record or {}), "currency": "X"})
    assert remap(broken, PROPOSAL_MAP).status is SyncStatus.FAILED


def test_filtered_records_are_counted_per_map_leg_invoice_and_reason_in_key_order() -> None:
    sent = mapped()
    skipped = [
        sent.becomes(RecordStatus.filtered("skip sync")),
        replace(sent, record_id=uuid4()).becomes(RecordStatus.filtered("skip sync")),
        replace(sent, record_id=uuid4(), invoice_id=None).becomes(
            RecordStatus.filtered("skip sync")
        ),
        replace(sent, record_id=uuid4()).becomes(RecordStatus.filtered("another reason")),
    ]

    counts = count_filtered([sent, *skipped])

    assert [(c.invoice_id, c.reason, c.source_rows) for c in counts] == [
        ("", "skip sync", 1),  # a row of no invoice
        (sent.invoice_id, "another reason", 1),
        (sent.invoice_id, "skip sync", 2),
    ]
    assert {(c.map_name, c.leg_name) for c in counts} == {(sent.map_name, sent.leg_name)}
    assert count_filtered([sent]) == []
