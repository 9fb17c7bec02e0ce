"""The bridge record and its lifecycle, as pure code: no I/O, no clock.

A bridge record is one record of one source event on its way through one leg of a table map:
mapped from the source (`records_of_event`), it *arrives* at its map and becomes what the map's
state and the paused queue allow (`arrive`: forwarded as pending, queued, held as not synced, or
failed past the queue's cap); a receipt settles it (`on_receipt`: synced, or failed with the
target's reason); a missing receipt is a time-out (`time_out_reason`); an administrator's retry
maps it again from its source record (`remap`) and it arrives once more. Every change of status
goes through `BridgeRecord`, whose status rules (`RecordStatus`) insist that a failed, filtered
or held record carries its reason.

The commands (`intake.py`, `commands.py`) load what these functions need, call them, and write
the record they return through the repository.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final
from uuid import UUID, uuid5

from pydantic import BaseModel, ValidationError

from schemas.receipts import ReceiptOutcome, SyncReceipt
from schemas.registry import MAPPED_RECORD_MODELS
from schemas.topics import Topic
from services.bridge.domain import (
    Arrival,
    BridgeRuleError,
    MapState,
    QueueLimits,
    RecordStatus,
    Refuse,
    SyncStatus,
    arrival,
    queue_admission,
)
from services.bridge.mapping import (
    Filtered,
    MapLeg,
    MappedRecord,
    MappingError,
    TableMap,
    apply_mapping,
    source_key,
)
from services.common.inbox import describe_validation_error

# Record ids are uuid5 in this namespace of (source event id, leg, record key): the same
# source event always gives the same record, whatever worker maps it and however often.
RECORD_NAMESPACE: Final = UUID("6f0d7a52-2b47-4b8e-9d8f-3f6a2c1d0b11")

# Target topics whose message key is the incoming message's key rather than the record key:
# staging rows keep `actuals-created`'s key (invoice id, else project id) and accounting
# details that of the posting (the invoice, else the journal's actual), so the records of one
# invoice stay on one partition, in order, and can share messages.
KEEPS_SOURCE_KEY: Final = frozenset(
    {Topic.FO_ACTUALS_STAGING.value, Topic.DV_ACTUALS_ACCOUNTING.value}
)


def record_id_for(source_event_id: UUID, leg_name: str, record_key: str) -> UUID:
    """The bridge record id: stable for one record of one source event, across re-sends."""
    return uuid5(RECORD_NAMESPACE, f"{source_event_id}|{leg_name}|{record_key}")


@dataclass(frozen=True)
class BridgeRecord:
    """One record of one source event through one leg of a table map.

    `source_record` and `payload` are None when the record was read without its documents
    (settling receipts reads thousands of records and needs neither). `attempts` counts the
    sends; `sent_in_catch_up` says whether the last send was part of a catch-up.
    """

    record_id: UUID
    map_name: str
    leg_name: str
    source_topic: str
    source_event_id: UUID
    record_key: str
    message_key: str | None
    target_topic: str
    invoice_id: str | None
    correlation_id: str | None
    status: SyncStatus
    reason: str | None
    source_record: dict[str, Any] | None
    payload: dict[str, Any] | None
    attempts: int = 0
    sent_in_catch_up: bool = False

    def __post_init__(self) -> None:
        RecordStatus(self.status, self.reason)  # a failed record always says why

    @property
    def queue_bytes(self) -> int:
        """What the record weighs in the paused queue: its mapped payload as JSON."""
        return len(json.dumps(self.payload))

    def becomes(self, status: RecordStatus) -> BridgeRecord:
        """The record in its next status (checked by the status rules)."""
        return replace(self, status=status.status, reason=status.reason)

    def fails(self, reason: str) -> BridgeRecord:
        """The record failed: kept with its reason (never empty)."""
        return self.becomes(RecordStatus.failed(reason))


# --------------------------------------------------------------------------------------------
# Mapping a source event into records


def records_of_event(
    pairs: list[tuple[TableMap, MapLeg]],
    source_topic: str,
    event_id: UUID,
    correlation_id: str | None,
    source: dict[str, Any],
    message_key: str | None,
) -> list[BridgeRecord]:
    """The records of one source event (its payload as JSON data) for every leg reading its
    topic, in order: pending when mapped, filtered or failed (mapping) with the reason."""
    records: list[BridgeRecord] = []
    for table_map, leg in pairs:
        for index, item in enumerate(_items_of(leg, source)):
            args = (source_topic, event_id, correlation_id, source, item, index, message_key)
            records.append(_record_of(table_map, leg, *args))
    return records


def _record_of(
    table_map: TableMap,
    leg: MapLeg,
    source_topic: str,
    event_id: UUID,
    correlation_id: str | None,
    source: dict[str, Any],
    item: dict[str, Any],
    index: int,
    message_key: str | None,
) -> BridgeRecord:
    """The record of one source item: mapped (pending), filtered or failed."""
    fallback_key = source_key(leg, item) or f"{event_id}#{index}"
    invoice_id = item.get("invoice_id") or source.get("invoice_id")
    invoice_id = None if invoice_id is None else str(invoice_id)
    mapped, failure = map_record(leg, item, table_map)
    record_key = mapped.key if mapped is not None else fallback_key
    if isinstance(failure, Filtered):
        status = RecordStatus.filtered(failure.reason)
    elif failure is not None:
        status = RecordStatus.failed(str(failure))
    else:
        status = RecordStatus(SyncStatus.PENDING)
    return BridgeRecord(
        record_id=record_id_for(event_id, leg.name, record_key),
        map_name=table_map.name,
        leg_name=leg.name,
        source_topic=source_topic,
        source_event_id=event_id,
        record_key=record_key,
        message_key=(
            message_key if leg.target_topic in KEEPS_SOURCE_KEY and message_key else record_key
        ),
        target_topic=leg.target_topic,
        invoice_id=invoice_id,
        correlation_id=invoice_id or correlation_id,
        status=status.status,
        reason=status.reason,
        source_record=item,
        payload=None if mapped is None else mapped.payload,
    )


def _items_of(leg: MapLeg, source: dict[str, Any]) -> list[dict[str, Any]]:
    """The source items of one event for one leg: the event, or each element it explodes."""
    if leg.explode is None:
        return [source]
    items = source.get(leg.explode.list_field)
    if not isinstance(items, list):
        return [source]  # mapping then fails on the missing list, visibly
    return [i for i in items if isinstance(i, dict)]


def map_record(
    leg: MapLeg, item: dict[str, Any], table_map: TableMap
) -> tuple[MappedRecord | None, MappingError | Filtered | None]:
    """Map one record and validate it against the target topic's schema."""
    try:
        result = apply_mapping(leg, item, table_map)
    except MappingError as exc:
        return None, exc
    if isinstance(result, Filtered):
        return None, result
    model: type[BaseModel] = MAPPED_RECORD_MODELS[Topic(leg.target_topic)]
    try:
        model.model_validate(result.payload)
    except ValidationError as exc:
        return None, MappingError(
            f"map '{table_map.name}' leg '{leg.name}': mapped record does not fit "
            f"{leg.target_topic}: {describe_validation_error(exc)}"
        )
    return result, None


def remap(record: BridgeRecord, table_map: TableMap) -> BridgeRecord:
    """The record mapped again from its source record (an administrator's retry, after the
    map or the data was fixed): pending with its new payload, filtered, or failed."""
    if record.source_record is None:
        raise BridgeRuleError(f"record {record.record_key} was read without its source record")
    mapped, failure = map_record(table_map.leg(record.leg_name), record.source_record, table_map)
    if isinstance(failure, Filtered):
        return record.becomes(RecordStatus.filtered(failure.reason))
    if failure is not None or mapped is None:
        return record.fails(str(failure))
    return replace(record, status=SyncStatus.PENDING, reason=None, payload=mapped.payload)


@dataclass(frozen=True)
class FilteredCount:
    """Source rows a map's leg filtered out, of one invoice ('' for none), for one reason.

    A filtered source row is counted, not stored as a record (docs/bridge.md, "Filtered
    rows"), as Microsoft's dual-write keeps no row for it."""

    map_name: str
    leg_name: str
    invoice_id: str
    reason: str
    source_rows: int


def count_filtered(records: list[BridgeRecord]) -> list[FilteredCount]:
    """The filtered records among `records`, counted per map, leg, invoice and reason, in key
    order (the order the upsert takes the count rows' locks in)."""
    counts: dict[tuple[str, str, str, str], int] = {}
    for record in records:
        if record.status is not SyncStatus.FILTERED:
            continue
        key = (record.map_name, record.leg_name, record.invoice_id or "", record.reason or "")
        counts[key] = counts.get(key, 0) + 1
    return [FilteredCount(*key, n) for key, n in sorted(counts.items())]


# --------------------------------------------------------------------------------------------
# Arrival: what a mapped record becomes at its map


@dataclass(frozen=True)
class QueueFigures:
    """A map's paused queue: records, bytes, and when the oldest was queued (None: empty)."""

    count: int
    bytes: int
    oldest: datetime | None

    def plus(self, record: BridgeRecord, now: datetime) -> QueueFigures:
        """The figures once `record` joined the queue at `now`."""
        return QueueFigures(self.count + 1, self.bytes + record.queue_bytes, self.oldest or now)


def queues(state: MapState) -> bool:
    """Whether a record arriving in `state` joins the queue (so the queue's figures matter)."""
    return arrival(state) is Arrival.QUEUE


def arrive(
    record: BridgeRecord,
    state: MapState,
    queue: QueueFigures | None,
    limits: QueueLimits,
    now: datetime,
) -> BridgeRecord:
    """What a mapped record becomes when it arrives at its map, whatever brought it (a source
    event, `run` of a stopped map carrying its held records, an administrator's retry):

    - running: pending, to be forwarded;
    - paused, resuming or initializing: queued, unless the queue is past its age or size cap
      (domain.md: new changes are refused until someone resumes), then failed with the
      queue-limit reason;
    - stopped: held as not synced.

    `queue` holds the map's queue figures; it may be None only when the state does not queue.
    """
    what = arrival(state)
    if what is Arrival.FORWARD:
        return replace(record, status=SyncStatus.PENDING, reason=None)
    if what is Arrival.HOLD_NOT_SYNCED:
        return record.becomes(RecordStatus.not_synced_map_stopped())
    if queue is None:
        raise BridgeRuleError(f"map '{record.map_name}' is {state.value}: its queue is needed")
    oldest_age = None if queue.oldest is None else now - queue.oldest
    decision = queue_admission(queue.count, queue.bytes, oldest_age, limits)
    if isinstance(decision, Refuse):
        return record.fails(decision.reason)
    return replace(record, status=SyncStatus.QUEUED, reason=None)


# --------------------------------------------------------------------------------------------
# Receipts and time-outs


def on_receipt(record: BridgeRecord, receipt: SyncReceipt) -> BridgeRecord | None:
    """The record after a receipt from its target, or None when the receipt changes nothing.

    Applied: a pending or failed record is synced (a failed one was re-sent and applied after
    all). Rejected: a pending record fails with the target's reason; a rejection answering an
    older send of a record since applied (or failed already) changes nothing.
    """
    if receipt.outcome is ReceiptOutcome.APPLIED:
        if record.status in (SyncStatus.PENDING, SyncStatus.FAILED):
            return replace(record, status=SyncStatus.SYNCED, reason=None)
        return None
    if record.status is not SyncStatus.PENDING:
        return None
    return record.fails(f"{receipt.target} refused: {receipt.reason or 'no reason given'}")


def time_out_reason(record: BridgeRecord, overdue_after: timedelta) -> str | None:
    """The error a pending record without a receipt within `overdue_after` counts as, or None
    when it does not count.

    The record stays pending and is sent again. A missing receipt is an error like a refusal:
    it counts towards the alert rules (one side down pauses the map, as Microsoft intends).
    Only the first time-out of a record counts: after a resume, the re-sends of records already
    in error must not pause the map again before the target had a chance to answer.
    """
    if record.status is not SyncStatus.PENDING:
        raise BridgeRuleError(f"record {record.record_key} is {record.status.value}, not pending")
    if record.attempts > 1:
        return None
    return (
        f"no receipt for {record.record_key} from {record.target_topic} "
        f"within {overdue_after.total_seconds():g} s (attempt {record.attempts}); re-sent"
    )
