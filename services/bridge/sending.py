"""Sending bridge records to their targets: the outbox rows that carry their mapped payloads.

A record is sent by writing its outbox row in the transaction that makes it pending; the relay
publishes it after the commit. The first send of records arriving at a running map inserts them
as sent (`forward_new`); every later send (catch-up, re-drive, retry) counts one more attempt on
the stored record (`send`).
"""

from __future__ import annotations

from typing import Any, Final

from schemas.envelope import Envelope
from schemas.registry import MAX_RECORDS_PER_MESSAGE, RECORD_RUN_TOPICS, TOPIC_PAYLOADS
from schemas.topics import Topic, topic_name
from services.bridge import repository as repo
from services.bridge.records import BridgeRecord
from services.common import outbox
from services.common.db import DbConnection
from services.common.logging import get_logger

log = get_logger(__name__)

EVENT_TYPES: Final[dict[str, str]] = {
    Topic.FO_INVOICE_PROPOSALS: "proposal.header",
    Topic.FO_ACTUALS_STAGING: "staging.actual",
    Topic.DV_ACTUALS_ACCOUNTING: "actual.accounting",
}

Outgoing = tuple[str, str | None, Envelope[Any]]


class RecordSender:
    """Writes records' outbox rows, on the caller's connection and transaction."""

    def __init__(self, topic_prefix: str) -> None:
        self.topic_prefix = topic_prefix

    async def forward_new(self, conn: DbConnection, records: list[BridgeRecord]) -> None:
        """Insert records arriving at a running map as sent (pending, first attempt) and
        write their outbox rows; a record seen before is left as it is and not sent again."""
        if not records:
            return
        inserted = await repo.insert_records(conn, records, sent=True)
        await outbox.add_many(conn, self.outgoing([r for r in records if r.record_id in inserted]))

    async def send(
        self, conn: DbConnection, records: list[BridgeRecord], *, in_catch_up: bool | None
    ) -> None:
        """Send stored records once more, as new events, in order; they become pending.
        `in_catch_up=None` keeps each record's own flag (a re-send)."""
        if not records:
            return
        flags = [r.sent_in_catch_up if in_catch_up is None else in_catch_up for r in records]
        attempts = await repo.mark_sent(conn, [r.record_id for r in records], flags)
        for record in records:
            log.debug(
                "record_sent",
                map=record.map_name,
                key=record.record_key,
                attempts=attempts.get(record.record_id),
                invoice_id=record.invoice_id,
            )
        await outbox.add_many(conn, self.outgoing(records))

    def outgoing(self, records: list[BridgeRecord]) -> list[Outgoing]:
        """The outbox rows (topic, key, event) that carry records' payloads to their targets.

        On a topic that carries runs (`RECORD_RUN_TOPICS`), consecutive records of one map,
        message key and invoice share a message, up to `MAX_RECORDS_PER_MESSAGE`, each with
        its record id; any other record travels alone, its record id the causation id. The
        messages keep the records' order, and one record's sends always share its key.
        """

        def group(record: BridgeRecord) -> Any:
            if record.target_topic in RECORD_RUN_TOPICS:
                return (
                    record.target_topic,
                    record.map_name,
                    record.message_key,
                    record.correlation_id,
                )
            return record.record_id

        outgoing: list[Outgoing] = []
        for run in outbox.consecutive_runs(records, group, MAX_RECORDS_PER_MESSAGE):
            first = run[0]
            target = Topic(first.target_topic)
            if target in RECORD_RUN_TOPICS:
                items = [{"record_id": r.record_id, "record": r.payload} for r in run]
                payload = TOPIC_PAYLOADS[target].model_validate({"records": items})
                causation_id = None
            else:
                payload = TOPIC_PAYLOADS[target].model_validate(first.payload)
                causation_id = first.record_id
            envelope = outbox.envelope(
                EVENT_TYPES[target],
                first.map_name,
                payload,
                correlation_id=first.correlation_id,
                causation_id=causation_id,
            )
            outgoing.append((topic_name(target, self.topic_prefix), first.message_key, envelope))
        return outgoing
