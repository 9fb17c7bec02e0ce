"""The bridge's per-event logic and administrator actions, on PostgreSQL, around the pure rules.

`BridgeProcessor.process` is what every faust agent calls for every message: validate (a bad
or too large message becomes a dead letter for `<topic>.dlq`), then in ONE transaction record
the event id in the shared inbox (`dwsim_inbox`; a repeat is skipped) and apply it:

- a source event of a table map is mapped leg by leg into bridge records; each record is
  forwarded (outbox, pending), queued (paused / resuming / initializing), held (map stopped),
  filtered (e.g. skip sync) or failed (unmappable, queue limit), as the map's state says;
- a receipt moves its record from pending to synced, or to failed with the target's reason
  into the error queue, where the alert rules look at it;
- a proposal header change from Finance is refused as a one-way violation and logged.

A handler that raises for an unexpected reason parks the event in `dwsim_parked_event` with the
reason (as the shared inbox does) and processing continues; an unreachable database raises to
the agent, which retries and, failing that, crashes the process (at-least-once: the offset was
not committed, so the restarted worker applies the event then).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from uuid import UUID, uuid5

import asyncpg
from pydantic import BaseModel, ValidationError

from schemas.envelope import Envelope
from schemas.receipts import DeadLetter, ReceiptOutcome, SyncReceipt
from schemas.registry import (
    MAPPED_RECORD_MODELS,
    MAX_RECORDS_PER_MESSAGE,
    RECORD_RUN_TOPICS,
    TOPIC_PAYLOADS,
)
from schemas.topics import Topic, topic_name
from services.bridge import repository as repo
from services.bridge.domain import NOT_SYNCED_MAP_STOPPED as HELD_REASON
from services.bridge.domain import (
    Admit,
    AlertAction,
    Arrival,
    BridgeRuleError,
    ErrorType,
    Filtered,
    MapAction,
    MapLeg,
    MappedRecord,
    MappingError,
    MapState,
    QueueLimits,
    Side,
    SyncStatus,
    TableMap,
    apply_mapping,
    arrival,
    check_direction,
    evaluate_alerts,
    legs_for_topic,
    queue_admission,
    transition,
)
from services.bridge.table_maps import (
    ACTUALS_MAP_NAME,
    DEFAULT_ALERT_RULES,
    PROPOSAL_MAP,
    PROPOSAL_MAP_NAME,
    TABLE_MAPS,
)
from services.common import outbox
from services.common.db import TRANSIENT_DATABASE_ERRORS, DbConnection
from services.common.dead_letters import dead_letter, too_large_reason
from services.common.errors import OneWayViolation
from services.common.inbox import (
    ConsumerStats,
    Delivery,
    apply_batch_once,
    describe_validation_error,
    parse_event,
)
from services.common.logging import get_logger
from services.common.parking import retry_parked
from services.common.settings import Settings

log = get_logger(__name__)

# Short names an administrator may use instead of a map's full name.
MAP_SLUGS: Final[dict[str, str]] = {PROPOSAL_MAP_NAME: "invoices", ACTUALS_MAP_NAME: "actuals"}
MAPS_BY_NAME: Final[dict[str, TableMap]] = {m.name: m for m in TABLE_MAPS}

# Topics the bridge consumes (base names; the prefix is added per simulation).
SOURCE_TOPICS: Final[tuple[Topic, ...]] = (
    Topic.INVOICE_CONFIRMED,
    Topic.ACTUALS_CREATED,
    Topic.INVOICE_POSTED,
    Topic.JOURNAL_POSTED,
    Topic.PROPOSAL_HEADER_CHANGED,
    Topic.SYNC_RECEIPTS,
)

EVENT_TYPES: Final[dict[str, str]] = {
    Topic.FO_INVOICE_PROPOSALS: "proposal.header",
    Topic.FO_ACTUALS_STAGING: "staging.actual",
    Topic.DV_ACTUALS_ACCOUNTING: "actual.accounting",
}

# Target topics whose message key is the incoming message's key rather than the record key:
# staging rows keep `actuals-created`'s key (invoice id, else project id) and accounting
# details that of the posting (the invoice, else the journal's actual), so the records of one
# invoice stay on one partition, in order, and can share messages.
KEEPS_SOURCE_KEY: Final = frozenset(
    {Topic.FO_ACTUALS_STAGING.value, Topic.DV_ACTUALS_ACCOUNTING.value}
)

# Record ids are uuid5 in this namespace of (source event id, leg, record key): the same
# source event always gives the same record, whatever worker maps it and however often.
RECORD_NAMESPACE: Final = UUID("6f0d7a52-2b47-4b8e-9d8f-3f6a2c1d0b11")

# Errors meaning the database is away (or the transaction lost a race): never park for them.
DATABASE_UNAVAILABLE: Final = TRANSIENT_DATABASE_ERRORS


class RecordNotRetryable(BridgeRuleError):
    """An error-queue entry that cannot be retried (resolved already, or without a record)."""


def record_id_for(source_event_id: UUID, leg_name: str, record_key: str) -> UUID:
    """The bridge record id: stable for one record of one source event, across re-sends."""
    return uuid5(RECORD_NAMESPACE, f"{source_event_id}|{leg_name}|{record_key}")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Incoming:
    """One message as an agent hands it over."""

    topic: str  # full (prefixed) name
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class Outcome:
    """What became of a message; `dead_letter` is set when it failed validation."""

    kind: str  # applied | duplicate | parked | dead_letter
    dead_letter: DeadLetter | None = None


class BridgeProcessor:
    """Applies messages and administrator actions; owns no task and no broker connection."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.clock = clock
        self.stats = ConsumerStats()
        self.limits = QueueLimits(
            max_age=timedelta(seconds=settings.queue_max_age_s),
            max_size_bytes=settings.queue_max_bytes,
        )
        prefix = settings.topic_prefix
        self._base_of = {topic_name(t, prefix): t for t in SOURCE_TOPICS}

    def base_topic(self, full_name: str) -> Topic:
        return self._base_of[full_name]

    # ----------------------------------------------------------------------------------------
    # Messages

    async def process(self, msg: Incoming) -> Outcome:
        """Apply one message (see `process_batch`)."""
        [outcome] = await self.process_batch([msg])
        return outcome

    async def process_batch(self, messages: list[Incoming]) -> list[Outcome]:
        """Apply messages in one transaction; one outcome per message, in order.

        Messages that do not validate become dead letters; the others go through the shared
        inbox (`apply_batch_once`): repeats are skipped, the new events applied together with
        bulk statements, and only if that fails one by one, parking those that fail.
        """
        outcomes: list[Outcome | None] = []
        deliveries: list[Delivery] = []
        for msg in messages:
            base = self.base_topic(msg.topic)
            reason = too_large_reason(msg.value, self.settings.max_message_bytes)
            if reason is None:
                try:
                    event = parse_event(msg.value, TOPIC_PAYLOADS[base])
                except ValidationError as exc:
                    reason = describe_validation_error(exc)
            if reason is not None:
                letter = dead_letter(
                    msg.topic,
                    msg.partition,
                    msg.offset,
                    msg.key,
                    msg.value,
                    reason,
                    max_bytes=self.settings.max_message_bytes,
                    headers=msg.headers,
                )
                outcomes.append(Outcome("dead_letter", letter))
                continue
            key = msg.key.decode(errors="replace") if msg.key is not None else None
            deliveries.append(Delivery(event, msg.topic, key, msg.value or b""))
            outcomes.append(None)
        kinds: list[str] = []
        if deliveries:
            async with self.pool.acquire() as conn, conn.transaction():
                kinds = await apply_batch_once(conn, deliveries, self._apply_one, self._apply_many)
        self.stats.dead_lettered += len(messages) - len(deliveries)
        self.stats.applied += kinds.count("applied")
        self.stats.duplicates += kinds.count("duplicate")
        self.stats.parked += kinds.count("parked")
        applied = iter(kinds)
        return [o if o is not None else Outcome(next(applied)) for o in outcomes]

    async def _apply_one(self, conn: DbConnection, delivery: Delivery) -> None:
        await self.dispatch(conn, self.base_topic(delivery.topic), delivery.event, delivery.key)

    async def _apply_many(self, conn: DbConnection, deliveries: list[Delivery]) -> None:
        """Runs of one topic go through the bulk paths, in arrival order."""
        start = 0
        while start < len(deliveries):
            topic = deliveries[start].topic
            end = start
            while end < len(deliveries) and deliveries[end].topic == topic:
                end += 1
            run, base = deliveries[start:end], self.base_topic(topic)
            if base is Topic.SYNC_RECEIPTS:
                await self.on_receipts(conn, [d.event for d in run])
            elif base is Topic.PROPOSAL_HEADER_CHANGED:
                for delivery in run:
                    await self.on_one_way_violation(conn, delivery.event)
            else:
                await self.on_source_events(conn, base, [(d.event, d.key) for d in run])
            start = end

    async def dispatch(
        self, conn: DbConnection, base: Topic, event: Envelope[Any], key: str | None
    ) -> None:
        if base is Topic.SYNC_RECEIPTS:
            await self.on_receipts(conn, [event])
        elif base is Topic.PROPOSAL_HEADER_CHANGED:
            await self.on_one_way_violation(conn, event)
        else:
            await self.on_source_events(conn, base, [(event, key)])

    async def retry_parked(self, event_id: UUID) -> bool:
        """Apply a parked event again (the shared /parked-events API calls this)."""

        async def apply(conn: DbConnection, row: asyncpg.Record) -> None:
            base = self.base_topic(row["topic"])
            event = parse_event(row["value"], TOPIC_PAYLOADS[base])
            await self.dispatch(conn, base, event, row["key"])

        return await retry_parked(self.pool, event_id, apply)

    # ----------------------------------------------------------------------------------------
    # Source events of the table maps

    async def on_source_events(
        self,
        conn: DbConnection,
        base: Topic,
        events: list[tuple[Envelope[Any], str | None]],
    ) -> None:
        """Map source events (with their message keys) into records, in order.

        Records a running map forwards are written in bulk: one insert of the records, one of
        their outbox rows; so are the filtered ones (skip sync), which send nothing. A record
        that goes any other way (failed, queued, held) is settled on its own, after the
        forwards before it, so the outbox keeps arrival order; a failure may fire an alert
        rule that pauses the map, so its state is read again after one.
        """
        pairs = legs_for_topic(TABLE_MAPS, base.value)
        if not pairs:
            raise BridgeRuleError(f"no table map reads topic '{base.value}'")
        # Every topic belongs to one map: one map lock per transaction (see repository).
        map_name = pairs[0][0].name
        state = (await repo.lock_map(conn, map_name)).state
        forward: list[repo.NewRecord] = []
        filtered: list[repo.NewRecord] = []
        for event, message_key in events:
            source = event.payload.model_dump(mode="json")
            for table_map, leg in pairs:
                for index, item in enumerate(_records_of(leg, source)):
                    record = self._new_record(
                        table_map, leg, base, event, source, item, index, message_key
                    )
                    if record.status is SyncStatus.PENDING and arrival(state) is Arrival.FORWARD:
                        forward.append(record)
                        continue
                    if record.status is SyncStatus.FILTERED:
                        filtered.append(record)
                        continue
                    await self._forward(conn, forward)
                    forward = []
                    await self._settle(conn, state, record)
                    if record.status is SyncStatus.FAILED:
                        state = (await repo.lock_map(conn, map_name)).state
        await self._forward(conn, forward)
        if filtered:
            await repo.insert_records(conn, filtered)
            for reason in sorted({r.reason or "" for r in filtered}):
                these = [r for r in filtered if r.reason == reason]
                log.info(
                    "records_filtered",
                    map=map_name,
                    reason=reason,
                    count=len(these),
                    invoice_ids=sorted({r.invoice_id for r in these if r.invoice_id}),
                )

    def _new_record(
        self,
        table_map: TableMap,
        leg: MapLeg,
        base: Topic,
        event: Envelope[Any],
        source: dict[str, Any],
        item: dict[str, Any],
        index: int,
        message_key: str | None,
    ) -> repo.NewRecord:
        """The record of one source item: mapped (pending), filtered or failed."""
        source_key = _source_key(leg, item) or f"{event.event_id}#{index}"
        invoice_id = item.get("invoice_id") or source.get("invoice_id")
        invoice_id = None if invoice_id is None else str(invoice_id)
        mapped, failure = map_record(leg, item, table_map)
        record_key = mapped.key if mapped is not None else source_key
        if isinstance(failure, Filtered):
            status, reason = SyncStatus.FILTERED, failure.reason
        elif failure is not None:
            status, reason = SyncStatus.FAILED, str(failure)
        else:
            status, reason = SyncStatus.PENDING, None
        return repo.NewRecord(
            record_id=record_id_for(event.event_id, leg.name, record_key),
            map_name=table_map.name,
            leg_name=leg.name,
            source_topic=base.value,
            source_event_id=event.event_id,
            record_key=record_key,
            message_key=(
                message_key if leg.target_topic in KEEPS_SOURCE_KEY and message_key else record_key
            ),
            target_topic=leg.target_topic,
            invoice_id=invoice_id,
            correlation_id=invoice_id or event.correlation_id,
            status=status,
            reason=reason,
            source_record=item,
            payload=None if mapped is None else mapped.payload,
        )

    async def _forward(self, conn: DbConnection, records: list[repo.NewRecord]) -> None:
        """Write mapped records of a running map as sent (pending) and their outbox rows."""
        if not records:
            return
        inserted = await repo.insert_records(conn, records, sent=True)
        await outbox.add_many(
            conn, self._outgoing([_as_row(r) for r in records if r.record_id in inserted])
        )

    async def _settle(self, conn: DbConnection, state: MapState, record: repo.NewRecord) -> None:
        """A record that is not simply forwarded or filtered: failed, or meeting the map's
        state (queued or held)."""
        if record.status is SyncStatus.FAILED:
            if await repo.insert_record(conn, record):
                await self._record_error(
                    conn,
                    record.map_name,
                    record.record_id,
                    ErrorType.MAPPING,
                    record.reason or "",
                    invoice_id=record.invoice_id,
                )
            return
        await self._arrive(conn, state, record)

    async def _arrive(self, conn: DbConnection, state: MapState, record: repo.NewRecord) -> None:
        """A mapped record meets the map's state: forward, queue or hold it."""
        what = arrival(state)
        if what is Arrival.FORWARD:
            if await repo.insert_record(conn, record):
                await self.send_many(conn, [_as_row(record)], in_catch_up=False)
        elif what is Arrival.QUEUE:
            size = len(json.dumps(record.payload))
            figures = await repo.queue_figures(conn, record.map_name)
            oldest_age = None if figures.oldest is None else self.clock() - figures.oldest
            decision = queue_admission(figures.count, figures.bytes, oldest_age, self.limits)
            if isinstance(decision, Admit):
                queued = _replace(record, status=SyncStatus.QUEUED, reason=None)
                if await repo.insert_record(conn, queued):
                    await repo.enqueue(conn, record.map_name, record.record_id, size)
            else:
                failed = _replace(record, status=SyncStatus.FAILED, reason=decision.reason)
                if await repo.insert_record(conn, failed):
                    await self._record_error(
                        conn,
                        record.map_name,
                        record.record_id,
                        ErrorType.QUEUE_LIMIT,
                        decision.reason,
                        invoice_id=record.invoice_id,
                    )
        else:
            held = _replace(record, status=SyncStatus.NOT_SYNCED, reason=HELD_REASON)
            await repo.insert_record(conn, held)

    async def send_many(
        self, conn: DbConnection, rows: list[dict[str, Any]], *, in_catch_up: bool | None
    ) -> None:
        """Put stored records' mapped payloads in the outbox, as new events, in order; they
        become pending. `in_catch_up=None` keeps each record's own flag (a re-send)."""
        if not rows:
            return
        flags = [row["sent_in_catch_up"] if in_catch_up is None else in_catch_up for row in rows]
        attempts = await repo.mark_sent(conn, [row["record_id"] for row in rows], flags)
        for row in rows:
            log.debug(
                "record_sent",
                map=row["map_name"],
                key=row["record_key"],
                attempts=attempts.get(row["record_id"]),
                invoice_id=row["invoice_id"],
            )
        await outbox.add_many(conn, self._outgoing(rows))

    def _outgoing(self, rows: list[dict[str, Any]]) -> list[tuple[str, str | None, Envelope[Any]]]:
        """The outbox rows (topic, key, event) that carry records' payloads to their targets.

        On a topic that carries runs (`RECORD_RUN_TOPICS`), consecutive records of one map,
        message key and invoice share a message, up to `MAX_RECORDS_PER_MESSAGE`, each with
        its record id; any other record travels alone, its record id the causation id. The
        messages keep the records' order, and one record's sends always share its key.
        """

        def group(row: dict[str, Any]) -> Any:
            if row["target_topic"] in RECORD_RUN_TOPICS:
                return (
                    row["target_topic"],
                    row["map_name"],
                    row["message_key"],
                    row["correlation_id"],
                )
            return row["record_id"]

        outgoing: list[tuple[str, str | None, Envelope[Any]]] = []
        for run in outbox.consecutive_runs(rows, group, MAX_RECORDS_PER_MESSAGE):
            first = run[0]
            target = Topic(first["target_topic"])
            if target in RECORD_RUN_TOPICS:
                items = [{"record_id": r["record_id"], "record": r["payload"]} for r in run]
                payload = TOPIC_PAYLOADS[target].model_validate({"records": items})
                causation_id = None
            else:
                payload = TOPIC_PAYLOADS[target].model_validate(first["payload"])
                causation_id = first["record_id"]
            envelope = outbox.envelope(
                EVENT_TYPES[target],
                first["map_name"],
                payload,
                correlation_id=first["correlation_id"],
                causation_id=causation_id,
            )
            topic = topic_name(target, self.settings.topic_prefix)
            outgoing.append((topic, first["message_key"], envelope))
        return outgoing

    # ----------------------------------------------------------------------------------------
    # Receipts

    async def on_receipts(self, conn: DbConnection, events: list[Envelope[Any]]) -> None:
        """Settle the records that receipts answer, in receipt order.

        Maps are locked before records (as everywhere), the records once for the batch.
        An applied record becomes synced and its open errors are resolved; a rejection fails
        a pending record into the error queue. A rejection answering an older send of a
        record that has since been applied (or failed already) changes nothing.
        """
        receipts: list[SyncReceipt] = [r for e in events for r in e.payload.receipts]
        ids = list({r.source_event_id for r in receipts})
        found = await repo.records_by_id(conn, ids)  # their maps, to lock first
        for map_name in sorted({row["map_name"] for row in found.values()}):
            await repo.lock_map(conn, map_name)
        records = await repo.records_by_id(conn, list(found), lock=True)
        synced: dict[UUID, tuple[dict[str, Any], str]] = {}
        for receipt in receipts:
            record = records.get(receipt.source_event_id)
            if record is None:
                log.warning(
                    "receipt_for_unknown_record",
                    record_id=str(receipt.source_event_id),
                    map=receipt.map_name,
                    key=receipt.record_key,
                )
                continue
            status = SyncStatus(record["status"])
            if receipt.outcome is ReceiptOutcome.APPLIED:
                if status in (SyncStatus.PENDING, SyncStatus.FAILED):
                    record["status"] = SyncStatus.SYNCED.value
                    synced[record["record_id"]] = (record, receipt.target)
                continue
            if status is not SyncStatus.PENDING:
                continue
            reason = f"{receipt.target} refused: {receipt.reason or 'no reason given'}"
            record["status"] = SyncStatus.FAILED.value
            await self._fail_record(
                conn, record, ErrorType.TARGET_REFUSED, reason, catch_up=record["sent_in_catch_up"]
            )
        if not synced:
            return
        await repo.set_records_synced(conn, list(synced))
        for record_id in await repo.resolve_errors_of_many(conn, list(synced)):
            record, target = synced[record_id]
            await repo.add_activity(
                conn,
                record["map_name"],
                "error_resolved",
                f"record {record['record_key']} applied by {target}",
                invoice_id=record["invoice_id"],
                record_id=record_id,
            )

    # ----------------------------------------------------------------------------------------
    # One-way enforcement

    async def on_one_way_violation(self, conn: DbConnection, event: Envelope[Any]) -> None:
        try:
            check_direction(PROPOSAL_MAP, Side.FINANCE, Side.DATAVERSE)
        except OneWayViolation as exc:
            invoice_id = str(event.payload.invoice_id)
            await repo.add_activity(
                conn,
                PROPOSAL_MAP.name,
                "one_way_violation",
                f"proposal header change from Finance refused: {exc}",
                invoice_id=invoice_id,
                detail={
                    "event_id": str(event.event_id),
                    "changed_fields": event.payload.changed_fields,
                    "legal_entity": event.payload.legal_entity,
                },
            )
            log.warning("one_way_violation", map=PROPOSAL_MAP.name, invoice_id=invoice_id)
            return
        raise BridgeRuleError("the proposal map unexpectedly carries Finance to Dataverse")

    # ----------------------------------------------------------------------------------------
    # Errors and alerts

    async def _fail_record(
        self,
        conn: DbConnection,
        record: dict[str, Any],
        error_type: ErrorType,
        reason: str,
        *,
        catch_up: bool = False,
    ) -> None:
        """A stored record fails: its status and reason, and an entry in the error queue."""
        await repo.set_record_status(conn, record["record_id"], SyncStatus.FAILED, reason)
        await self._record_error(
            conn,
            record["map_name"],
            record["record_id"],
            error_type,
            reason,
            invoice_id=record["invoice_id"],
            catch_up=catch_up,
        )

    async def _record_error(
        self,
        conn: DbConnection,
        map_name: str,
        record_id: UUID | None,
        error_type: ErrorType,
        reason: str,
        *,
        invoice_id: str | None = None,
        catch_up: bool = False,
    ) -> None:
        now = self.clock()
        error_id = await repo.add_error(
            conn, map_name, record_id, error_type, reason, now, catch_up=catch_up
        )
        await repo.add_activity(
            conn,
            map_name,
            "error",
            reason,
            invoice_id=invoice_id,
            record_id=record_id,
            detail={"error_id": error_id, "error_type": error_type.value, "catch_up": catch_up},
        )
        log.warning(
            "record_failed",
            map=map_name,
            invoice_id=invoice_id,
            reason=reason,
            error_type=error_type.value,
        )
        await self.evaluate_alerts(conn, map_name, now)

    async def evaluate_alerts(self, conn: DbConnection, map_name: str, now: datetime) -> None:
        """Fire the map's alert rules that the errors in their windows cross (map locked)."""
        stored = await repo.alert_rules(conn, map_name)
        if not stored:
            return
        widest = max(s.rule.window for s in stored)
        stamps = await repo.error_timestamps(conn, map_name, now - widest)
        last_fired = {s.rule: s.last_fired_at for s in stored if s.last_fired_at is not None}
        by_rule = {s.rule: s for s in stored}
        for alert in evaluate_alerts([s.rule for s in stored], stamps, now, last_fired):
            await repo.mark_rule_fired(conn, by_rule[alert.rule].id, now)
            await repo.add_activity(
                conn,
                map_name,
                "alert_fired",
                alert.reason,
                detail={"action": alert.action.value, "errors": alert.error_count},
            )
            log.warning("alert_fired", map=map_name, reason=alert.reason, action=alert.action)
            if alert.action is AlertAction.NOTIFY:
                continue
            action = MapAction.PAUSE if alert.action is AlertAction.PAUSE else MapAction.STOP
            row = await repo.lock_map(conn, map_name)
            try:
                new = transition(row.state, action, map_name=map_name)
            except BridgeRuleError as exc:
                await repo.add_activity(conn, map_name, "alert_action_refused", str(exc))
                continue
            await repo.set_map_state(conn, map_name, new)
            await repo.add_activity(
                conn,
                map_name,
                "state_changed",
                f"{row.state.value} -> {new.value} by alert rule: {alert.reason}",
                detail={"from": row.state.value, "to": new.value, "by": "alert rule"},
            )

    # ----------------------------------------------------------------------------------------
    # Administrator actions

    async def change_state(self, name_or_slug: str, action: MapAction) -> repo.MapRow:
        """run / pause / resume / stop; refused actions raise MapActionRefused (409)."""
        async with self.pool.acquire() as conn, conn.transaction():
            found = await repo.get_map(conn, name_or_slug)
            row = await repo.lock_map(conn, found.name)
            new = transition(row.state, action, map_name=row.name)
            await repo.set_map_state(conn, row.name, new)
            await repo.add_activity(
                conn,
                row.name,
                "state_changed",
                f"{row.state.value} -> {new.value} by administrator ({action.value})",
                detail={"from": row.state.value, "to": new.value, "by": "administrator"},
            )
            if action is MapAction.RUN:
                # The initial sync carries what arrived while the map was stopped, in order.
                held = await repo.held_records(conn, row.name)
                for record in held:
                    await repo.set_record_status(conn, record["record_id"], SyncStatus.QUEUED)
                    await repo.enqueue(
                        conn, row.name, record["record_id"], len(json.dumps(record["payload"]))
                    )
                await repo.add_activity(
                    conn,
                    row.name,
                    "initial_sync_started",
                    f"initial sync of {len(held)} held records started",
                    detail={"records": len(held)},
                )
            elif action is MapAction.RESUME:
                # Records sent before the pause and never answered go again first (they came
                # before anything queued): the target is presumably back, and as re-sends their
                # time-outs no longer count as new errors that would pause the map at once.
                unanswered = await repo.overdue_pending(conn, row.name, timedelta(0), 100_000)
                await self.send_many(conn, unanswered, in_catch_up=True)
                if unanswered:
                    await repo.add_activity(
                        conn,
                        row.name,
                        "redrive",
                        f"{len(unanswered)} unanswered records re-sent on resume",
                        detail={"records": [str(r["record_id"]) for r in unanswered[:50]]},
                    )
                figures = await repo.queue_figures(conn, row.name)
                await repo.add_activity(
                    conn,
                    row.name,
                    "catch_up_started",
                    f"catch-up of {figures.count} queued records started",
                    detail={"records": figures.count, "bytes": figures.bytes},
                )
            log.info("map_state_changed", map=row.name, action=action.value, state=new.value)
            return await repo.get_map(conn, row.name)

    async def drain_queue(self, map_name: str, batch: int) -> bool:
        """Send the next batch of a resuming or initializing map's queue, in order.

        When the queue is empty the map is running again. Arrivals of the map take the same
        row lock and queue while the map is not running, so "empty" here is final: nothing
        can slip in between the last send and the state change. True when more remain.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            row = await repo.lock_map(conn, map_name)
            if row.state not in (MapState.RESUMING, MapState.INITIALIZING):
                return False
            head = await repo.queue_head(conn, map_name, batch)
            await self.send_many(conn, head, in_catch_up=True)
            if head:
                await repo.dequeue(conn, [r["queue_seq"] for r in head])
            if len(head) == batch:
                return True
            action = (
                MapAction.CAUGHT_UP if row.state is MapState.RESUMING else MapAction.INITIALIZED
            )
            new = transition(row.state, action, map_name=map_name)
            await repo.set_map_state(conn, map_name, new)
            kind = "catch_up_finished" if action is MapAction.CAUGHT_UP else "initial_sync_finished"
            await repo.add_activity(
                conn,
                map_name,
                kind,
                f"queue drained; {row.state.value} -> {new.value}",
                detail={"from": row.state.value, "to": new.value},
            )
            await repo.add_activity(
                conn,
                map_name,
                "state_changed",
                f"{row.state.value} -> {new.value}",
                detail={"from": row.state.value, "to": new.value, "by": "bridge"},
            )
            log.info("map_state_changed", map=map_name, action=action.value, state=new.value)
            return False

    async def redrive(self, map_name: str, overdue_after: timedelta, batch: int) -> int:
        """Re-send the running map's pending records whose receipt is overdue."""
        async with self.pool.acquire() as conn, conn.transaction():
            # Look before taking the map's lock, which every record arriving for the map
            # needs: most ticks find nothing overdue, and a later tick sees what this missed.
            if not await repo.has_overdue(conn, map_name, overdue_after):
                return 0
            row = await repo.lock_map(conn, map_name)
            if row.state is not MapState.RUNNING:
                return 0
            overdue = await repo.overdue_pending(conn, map_name, overdue_after, batch)
            for record in overdue:
                # A missing receipt is an error like a refusal: it counts towards the alert
                # rules (one side down pauses the map, as Microsoft intends) and is resolved
                # when the target finally applies the record. Only the first time out of a
                # record counts: after a resume, the re-sends of records already in error must
                # not pause the map again before the target had a chance to answer.
                if record["attempts"] > 1:
                    continue
                await self._record_error(
                    conn,
                    map_name,
                    record["record_id"],
                    ErrorType.TIMEOUT,
                    f"no receipt for {record['record_key']} from {record['target_topic']} "
                    f"within {overdue_after.total_seconds():g} s (attempt {record['attempts']}); "
                    "re-sent",
                    invoice_id=record["invoice_id"],
                )
            await self.send_many(conn, overdue, in_catch_up=None)
            if overdue:
                await repo.add_activity(
                    conn,
                    map_name,
                    "redrive",
                    f"{len(overdue)} pending records re-sent: no receipt within {overdue_after}",
                    detail={"records": [str(r["record_id"]) for r in overdue[:50]]},
                )
                log.info("records_redriven", map=map_name, count=len(overdue))
            return len(overdue)

    async def retry_errors(self, error_ids: list[int]) -> list[dict[str, Any]]:
        """Retry the records behind these errors, each record once, in error order."""
        results: list[dict[str, Any]] = []
        async with self.pool.acquire() as conn, conn.transaction():
            errors = [await repo.get_error(conn, i) for i in error_ids]
            done: set[UUID] = set()
            for error in errors:
                if error["status"] == "resolved":
                    raise RecordNotRetryable(f"error {error['id']} is resolved already")
                if error["record_id"] is None:
                    raise RecordNotRetryable(f"error {error['id']} has no record to retry")
                if error["record_id"] in done:
                    await repo.mark_error_retried(conn, error["id"])
                    continue
                done.add(error["record_id"])
                outcome = await self._retry_record(conn, error)
                results.append({"error_id": error["id"], **outcome})
        return results

    async def _retry_record(self, conn: DbConnection, error: dict[str, Any]) -> dict[str, Any]:
        map_row = await repo.lock_map(conn, error["map_name"])
        record = await repo.get_record(conn, error["record_id"], lock=True)
        await repo.mark_error_retried(conn, error["id"])
        base = {"record_id": str(record["record_id"]), "record_key": record["record_key"]}
        if record["status"] == SyncStatus.SYNCED:
            await repo.resolve_errors_of(conn, record["record_id"])
            return {**base, "status": SyncStatus.SYNCED.value}
        if record["status"] == SyncStatus.QUEUED:
            # Retried once already while its map is paused: it waits in the map's queue, and
            # the queue holds a record once; resuming the map sends it.
            raise RecordNotRetryable(
                f"record {record['record_key']} is queued already: map {record['map_name']} "
                f"is {map_row.state.value}; it is sent when the map resumes"
            )
        table_map = MAPS_BY_NAME[record["map_name"]]
        leg = table_map.leg(record["leg_name"])
        mapped, failure = map_record(leg, record["source_record"], table_map)
        await repo.add_activity(
            conn,
            record["map_name"],
            "retry",
            f"record {record['record_key']} retried by administrator (error {error['id']})",
            invoice_id=record["invoice_id"],
            record_id=record["record_id"],
            detail={"error_id": error["id"]},
        )
        if isinstance(failure, Filtered):
            await repo.set_record_status(
                conn, record["record_id"], SyncStatus.FILTERED, failure.reason
            )
            return {**base, "status": SyncStatus.FILTERED.value}
        if failure is not None or mapped is None:
            reason = str(failure)
            await self._fail_record(conn, record, ErrorType.MAPPING, reason)
            return {**base, "status": SyncStatus.FAILED.value, "reason": reason}
        record["payload"] = mapped.payload
        what = arrival(map_row.state)
        if what is Arrival.FORWARD:
            await repo.set_record_status(
                conn, record["record_id"], SyncStatus.PENDING, payload=mapped.payload
            )
            await self.send_many(conn, [record], in_catch_up=False)
            return {**base, "status": SyncStatus.PENDING.value}
        if what is Arrival.QUEUE:
            await repo.set_record_status(
                conn, record["record_id"], SyncStatus.QUEUED, payload=mapped.payload
            )
            await repo.enqueue(
                conn, record["map_name"], record["record_id"], len(json.dumps(mapped.payload))
            )
            return {**base, "status": SyncStatus.QUEUED.value}
        await repo.set_record_status(
            conn, record["record_id"], SyncStatus.NOT_SYNCED, HELD_REASON, payload=mapped.payload
        )
        return {**base, "status": SyncStatus.NOT_SYNCED.value, "reason": HELD_REASON}


# --------------------------------------------------------------------------------------------
# Helpers of this module


def _records_of(leg: MapLeg, source: dict[str, Any]) -> list[dict[str, Any]]:
    """The source records of one event for one leg: the event, or each element it explodes."""
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


def _source_key(leg: MapLeg, item: dict[str, Any]) -> str | None:
    """The integration key read from the source fields, for records that cannot be mapped."""
    parts = []
    for key_field in leg.integration_key:
        mapping = leg.mapping_for_target(key_field)
        value = None if mapping is None else item.get(mapping.source)
        if value is None:
            return None
        parts.append(str(value))
    return "|".join(parts)


def _replace(record: repo.NewRecord, *, status: SyncStatus, reason: str | None) -> repo.NewRecord:
    from dataclasses import replace

    return replace(record, status=status, reason=reason)


def _as_row(record: repo.NewRecord) -> dict[str, Any]:
    return {
        "record_id": record.record_id,
        "map_name": record.map_name,
        "record_key": record.record_key,
        "message_key": record.message_key,
        "target_topic": record.target_topic,
        "invoice_id": record.invoice_id,
        "correlation_id": record.correlation_id,
        "payload": record.payload,
    }


async def seed(pool: asyncpg.Pool) -> None:
    """Maps (running) and default alert rules, on first start."""
    async with pool.acquire() as conn:
        await repo.seed_maps(conn, TABLE_MAPS, MAP_SLUGS, DEFAULT_ALERT_RULES)
