"""What the bridge does with the events it consumes, and how a record arrives at its map.

- a source event of a table map is mapped leg by leg into bridge records (`records.py`), and
  each arrives at its map (`arrive_all`): forwarded (outbox, pending), queued (paused, resuming,
  initializing), held (map stopped), or failed past the queue's cap; a record that cannot be
  mapped fails into the error queue, one the filter leaves out is counted (per map, leg,
  invoice and reason), not stored, as Microsoft's dual-write keeps no row for it;
- a receipt settles its record: synced, or failed with the target's reason into the error queue;
- a proposal header change from Finance is refused as a one-way violation and logged.

`arrive_all` is the one way into a map for a record, whoever brings it: intake here, and the
administrator's `run` of a stopped map and retry of an error (`commands.py`).
Runs on the caller's connection and transaction; the map's row lock is taken first.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from schemas.envelope import Envelope
from schemas.receipts import SyncReceipt
from schemas.topics import Topic
from services.bridge import error_repository as errors_repo
from services.bridge import filtered_repository as filtered_repo
from services.bridge import initial_sync_repository as sync_repo
from services.bridge import platform_limits
from services.bridge import repository as repo
from services.bridge.domain import (
    BridgeRuleError,
    ErrorType,
    MapState,
    PlatformLimits,
    QueueLimits,
    SyncStatus,
)
from services.bridge.error_queue import ErrorQueue
from services.bridge.initial_sync import ALREADY_THERE
from services.bridge.mapping import (
    Side,
    check_direction,
    legs_for_topic,
)
from services.bridge.records import (
    BridgeRecord,
    QueueFigures,
    arrive,
    count_filtered,
    on_receipt,
    queues,
    records_of_event,
)
from services.bridge.sending import RecordSender
from services.bridge.table_maps import PROPOSAL_MAP, TABLE_MAPS
from services.common.db import DbConnection
from services.common.errors import OneWayViolation
from services.common.logging import get_logger
from services.common.metrics import RoundTripCount

log = get_logger(__name__)


class Intake:
    """Applies consumed events and brings records into their maps."""

    def __init__(
        self,
        sender: RecordSender,
        errors: ErrorQueue,
        limits: QueueLimits,
        clock: Callable[[], datetime],
        platform_limits: PlatformLimits = PlatformLimits.NONE,
    ) -> None:
        self.sender = sender
        self.errors = errors
        self.limits = limits
        self.clock = clock
        # Told each settled batch's receipt round trips, counted per map and bucket by the
        # statement that settled them: the metrics' histogram. Told inside the transaction: a
        # batch run again after a lost database is told twice, which a histogram can bear.
        self.on_round_trips: Callable[[list[RoundTripCount]], None] | None = None
        self.platform_limits = platform_limits

    # ----------------------------------------------------------------------------------------
    # Source events of the table maps

    async def on_source_events(
        self,
        conn: DbConnection,
        base: Topic,
        events: list[tuple[Envelope[Any], str | None]],
    ) -> None:
        """Map source events (with their message keys) into records, which arrive at their
        map in order; filtered ones are counted together at the end (one statement), and
        leave no record.
        Records of a source transaction past Microsoft's limits fail together when the limits
        apply (`platform_limits.failing_events`)."""
        pairs = legs_for_topic(TABLE_MAPS, base.value)
        if not pairs:
            raise BridgeRuleError(f"no table map reads topic '{base.value}'")
        # Every topic belongs to one map: one map lock per transaction (see repository).
        map_name = pairs[0][0].name
        state = (await repo.lock_map(conn, map_name)).state
        mapped = [
            (
                event.event_id,
                event.payload.model_dump(mode="json"),
                message_key,
                event.correlation_id,
            )
            for event, message_key in events
        ]
        batch = [
            (event_id, source, records_of_event(pairs, base.value, event_id, corr, source, key))
            for event_id, source, key, corr in mapped
        ]
        batch, snapshot_records = await self._snapshot_rows(conn, map_name, batch)
        failing = await platform_limits.failing_events(
            conn, map_name, batch, self.platform_limits, self.clock()
        )
        arriving: list[BridgeRecord] = []
        filtered: list[BridgeRecord] = []
        over_limits: list[BridgeRecord] = []
        for event_id, _, records in batch:
            reason = failing.get(event_id)
            for record in records:
                if record.status is SyncStatus.FILTERED:
                    filtered.append(record)
                elif reason is not None and record.status is SyncStatus.PENDING:
                    over_limits.append(record.fails(reason))
                else:
                    arriving.append(record)
        await self.arrive_all(conn, map_name, state, arriving, new=True)
        if base is Topic.INVOICE_CONFIRMED:
            # One line per confirmed invoice: where its trace crosses the bridge.
            for record in arriving:
                log.info(
                    "proposal_header_arrived",
                    map=map_name,
                    state=state.value,
                    invoice_id=record.invoice_id,
                )
        await self._fail_over_limits(conn, map_name, over_limits)
        for run_id, record_ids in snapshot_records.items():
            await sync_repo.link_records(conn, run_id, record_ids)
        if filtered:
            # Counted, not stored: once, as the inbox applies this batch once (see
            # filtered_repository.add_counts).
            await filtered_repo.add_counts(conn, count_filtered(filtered))
            for reason in sorted({r.reason or "" for r in filtered}):
                these = [r for r in filtered if r.reason == reason]
                log.info(
                    "records_filtered",
                    map=map_name,
                    reason=reason,
                    count=len(these),
                    invoice_ids=sorted({r.invoice_id for r in these if r.invoice_id}),
                )

    # ----------------------------------------------------------------------------------------
    # Initial sync: snapshot rows (docs/bridge.md, "Initial sync")

    async def _snapshot_rows(
        self,
        conn: DbConnection,
        map_name: str,
        batch: list[tuple[UUID, dict[str, Any], list[BridgeRecord]]],
    ) -> tuple[list[tuple[UUID, dict[str, Any], list[BridgeRecord]]], dict[UUID, list[UUID]]]:
        """Of a batch, the snapshot rows of an initial sync's run are counted on their run,
        and those the map holds synced already (the same leg and record key) are left out:
        a re-run sends only what failed before, never arrived or is still on its way. Returns
        the batch left to arrive, and per run the ids of its records (linked once stored).

        Record ids come from the source event (`records.record_id_for`), so a snapshot row
        is a record of its own, not the live one's; Finance takes a row it holds already as
        a duplicate (headers by ProposalId, staging rows by actual id), so a row sent twice
        (its live record still pending, or in the same batch) is not doubled there.
        Snapshot messages of a run this map did not ask for arrive like live rows.
        """
        marked: list[tuple[int, UUID, int]] = []
        for index, (_, source, _) in enumerate(batch):
            mark = source.get("snapshot")
            if not isinstance(mark, dict):
                continue
            run_id = UUID(str(mark["snapshot_id"]))
            if await sync_repo.run_exists(conn, run_id, map_name):
                marked.append((index, run_id, int(mark["rows"])))
        if not marked:
            return batch, {}
        keys = [
            (r.leg_name, r.record_key)
            for index, _, _ in marked
            for r in batch[index][2]
            if r.status is SyncStatus.PENDING
        ]
        there = await sync_repo.keys_already_there(
            conn, map_name, keys, [s.value for s in ALREADY_THERE]
        )
        kept = list(batch)
        linked: dict[UUID, list[UUID]] = {}
        for index, run_id, rows in marked:
            event_id, source, records = batch[index]
            fresh = [
                r
                for r in records
                if r.status is not SyncStatus.PENDING or (r.leg_name, r.record_key) not in there
            ]
            kept[index] = (event_id, source, fresh)
            # A filtered row leaves no record to link: the run counts it itself.
            linked.setdefault(run_id, []).extend(
                r.record_id for r in fresh if r.status is not SyncStatus.FILTERED
            )
            filtered = sum(1 for r in fresh if r.status is SyncStatus.FILTERED)
            await sync_repo.note_rows(
                conn, run_id, rows, len(records), len(records) - len(fresh), filtered
            )
        return kept, linked

    # ----------------------------------------------------------------------------------------
    # Microsoft's live-sync limits (platform_limits.py)

    async def _fail_over_limits(
        self, conn: DbConnection, map_name: str, records: list[BridgeRecord]
    ) -> None:
        """Store the records failed by the platform's limits, each with an error-queue entry
        (one statement per reason); a record seen before is left as it is."""
        if not records:
            return
        inserted = await repo.insert_records(conn, records)
        for reason in dict.fromkeys(r.reason or "" for r in records):
            these = [r for r in records if r.reason == reason and r.record_id in inserted]
            await self.errors.add_many(conn, map_name, these, ErrorType.PLATFORM_LIMIT, reason)

    async def arrive_all(
        self,
        conn: DbConnection,
        map_name: str,
        state: MapState,
        records: list[BridgeRecord],
        *,
        new: bool,
    ) -> list[BridgeRecord]:
        """Records arrive at their map (locked, in `state`), in order; what each became.

        `new`: they come from source events and are inserted (a record seen before is left as
        it is); else they are stored records, whose status is updated. What a record becomes
        is `records.arrive`'s decision, here and nowhere else, so the queue's cap holds on
        every path. Records forwarded in a row are written in bulk; any other outcome is
        settled on its own, after the forwards before it, so the outbox keeps arrival order.
        A failure may fire an alert rule that pauses the map, so its state is read again
        after one. A record `new` and failed already (it could not be mapped) is stored as it
        is, with a mapping error.
        """
        result: list[BridgeRecord] = []
        forward: list[BridgeRecord] = []
        queue: QueueFigures | None = None
        for record in records:
            if new and record.status is SyncStatus.FAILED:
                arrived, error_type = record, ErrorType.MAPPING
            else:
                if queues(state) and queue is None:
                    queue = await repo.queue_figures(conn, map_name)
                arrived = arrive(record, state, queue, self.limits, self.clock())
                error_type = ErrorType.QUEUE_LIMIT
            result.append(arrived)
            if arrived.status is SyncStatus.PENDING:
                forward.append(arrived)
                continue
            await self._forward(conn, forward, new=new)
            forward = []
            if new and not await repo.insert_record(conn, arrived):
                continue  # the same source event, seen again
            if not new:
                await repo.save_status(conn, arrived)
            if arrived.status is SyncStatus.QUEUED:
                await repo.enqueue(conn, arrived)
                queue = None if queue is None else queue.plus(arrived, self.clock())
            elif arrived.status is SyncStatus.FAILED:
                await self.errors.add(conn, arrived, error_type, arrived.reason or "")
                state = (await repo.lock_map(conn, map_name)).state
                queue = None
        await self._forward(conn, forward, new=new)
        return result

    async def _forward(self, conn: DbConnection, records: list[BridgeRecord], *, new: bool) -> None:
        if new:
            await self.sender.forward_new(conn, records)
            return
        for record in records:
            await repo.save_status(conn, record)  # its new payload, when it was mapped again
        await self.sender.send(conn, records, in_catch_up=False)

    # ----------------------------------------------------------------------------------------
    # Receipts

    async def on_receipts(self, conn: DbConnection, events: list[Envelope[Any]]) -> None:
        """Settle the records that receipts answer, in receipt order (`records.on_receipt`).

        Maps are locked before records (as everywhere), the records once for the batch.
        An applied record becomes synced and its open errors are resolved; a rejection fails
        a pending record into the error queue.
        """
        receipts: list[SyncReceipt] = [r for e in events for r in e.payload.receipts]
        ids = list({r.source_event_id for r in receipts})
        found = await repo.records_by_id(conn, ids)  # their maps, to lock first
        for map_name in sorted({record.map_name for record in found.values()}):
            await repo.lock_map(conn, map_name)
        records = await repo.records_by_id(conn, list(found), lock=True)
        synced: dict[UUID, tuple[BridgeRecord, str]] = {}
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
            settled = on_receipt(record, receipt)
            if settled is None:
                continue
            records[record.record_id] = settled
            if settled.status is SyncStatus.SYNCED:
                synced[settled.record_id] = (settled, receipt.target)
                continue
            await self.errors.fail(
                conn, settled, ErrorType.TARGET_REFUSED, catch_up=settled.sent_in_catch_up
            )
        if not synced:
            return
        round_trips = await repo.set_records_synced(conn, list(synced))
        if self.on_round_trips is not None:
            self.on_round_trips(round_trips)
        for record_id in await errors_repo.resolve_errors_of_many(conn, list(synced)):
            record, target = synced[record_id]
            await repo.add_activity(
                conn,
                record.map_name,
                "error_resolved",
                f"record {record.record_key} applied by {target}",
                invoice_id=record.invoice_id,
                record_id=record_id,
            )

    # ----------------------------------------------------------------------------------------
    # One-way enforcement

    async def on_one_way_violation(self, conn: DbConnection, event: Envelope[Any]) -> None:
        """A proposal header changed in Finance: refused (the map is one-way) and logged."""
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
