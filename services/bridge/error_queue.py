"""The bridge's error queue and the alert rules that watch it.

Every failed record gets an entry in the error queue with its error type and reason (domain.md:
"each failed record is kept with its reason"); each new entry makes the map's alert rules look
at the errors in their windows, and a rule that fires notifies, pauses or stops the map.
Runs on the caller's connection, inside its transaction, with the map's row locked.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from services.bridge import error_repository as errors_repo
from services.bridge import repository as repo
from services.bridge.domain import (
    AlertAction,
    BridgeRuleError,
    ErrorType,
    MapAction,
    SyncStatus,
    evaluate_alerts,
    transition,
)
from services.bridge.records import BridgeRecord
from services.common.db import DbConnection
from services.common.logging import get_logger

log = get_logger(__name__)


class ErrorQueue:
    """Adds errors, and fires the alert rules they cross."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock

    async def fail(
        self,
        conn: DbConnection,
        record: BridgeRecord,
        error_type: ErrorType,
        *,
        catch_up: bool = False,
    ) -> None:
        """A stored record failed (`record` is it, failed with its reason): its status, and an
        entry in the error queue."""
        if record.status is not SyncStatus.FAILED or record.reason is None:
            raise BridgeRuleError(f"record {record.record_key} is {record.status.value}")
        await repo.save_status(conn, record)
        await self.add(conn, record, error_type, record.reason, catch_up=catch_up)

    async def add(
        self,
        conn: DbConnection,
        record: BridgeRecord,
        error_type: ErrorType,
        reason: str,
        *,
        catch_up: bool = False,
    ) -> None:
        """An entry for the record in the error queue, and the alert rules' look at it."""
        map_name, record_id, invoice_id = record.map_name, record.record_id, record.invoice_id
        now = self.clock()
        error_id = await errors_repo.add_error(
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

    async def add_many(
        self,
        conn: DbConnection,
        map_name: str,
        records: list[BridgeRecord],
        error_type: ErrorType,
        reason: str,
    ) -> None:
        """Entries for stored records that failed together for one reason: one statement, one
        line in the activity log, and one look of the alert rules at them."""
        if not records:
            return
        now = self.clock()
        ids = [r.record_id for r in records]
        await errors_repo.add_errors(conn, map_name, ids, error_type, reason, now)
        invoice_ids = sorted({r.invoice_id for r in records if r.invoice_id})
        await repo.add_activity(
            conn,
            map_name,
            "error",
            f"{len(records):,} records failed: {reason}",
            invoice_id=invoice_ids[0] if len(invoice_ids) == 1 else None,
            detail={"error_type": error_type.value, "records": len(records)},
        )
        log.warning(
            "records_failed",
            map=map_name,
            invoice_ids=invoice_ids,
            reason=reason,
            error_type=error_type.value,
            count=len(records),
        )
        await self.evaluate_alerts(conn, map_name, now)

    async def evaluate_alerts(self, conn: DbConnection, map_name: str, now: datetime) -> None:
        """Fire the map's alert rules that the errors in their windows cross (map locked)."""
        stored = await errors_repo.alert_rules(conn, map_name)
        if not stored:
            return
        widest = max(s.rule.window for s in stored)
        stamps = await errors_repo.error_timestamps(conn, map_name, now - widest)
        last_fired = {s.rule: s.last_fired_at for s in stored if s.last_fired_at is not None}
        by_rule = {s.rule: s for s in stored}
        for alert in evaluate_alerts([s.rule for s in stored], stamps, now, last_fired):
            await errors_repo.mark_rule_fired(conn, by_rule[alert.rule].id, now)
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
            await repo.change_map_state(
                conn,
                map_name,
                row.state,
                new,
                by="alert rule",
                message=f"{row.state.value} -> {new.value} by alert rule: {alert.reason}",
            )
