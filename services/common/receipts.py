"""Answers to the bridge on `sync-receipts`, in the transaction that applied or refused."""

from __future__ import annotations

from typing import Any

from schemas.envelope import Envelope
from schemas.receipts import ReceiptOutcome, SyncReceipt
from schemas.topics import Topic, topic_name
from services.common import outbox
from services.common.db import DbConnection
from services.common.settings import Settings


async def answer(
    conn: DbConnection,
    settings: Settings,
    event: Envelope[Any],
    record_key: str,
    target: str,
    reason: str | None = None,
) -> None:
    """Add the receipt for a mapped record: applied when `reason` is None, else rejected."""
    receipt = SyncReceipt(
        map_name=event.source,
        record_key=record_key,
        source_event_id=event.causation_id or event.event_id,
        outcome=ReceiptOutcome.APPLIED if reason is None else ReceiptOutcome.REJECTED,
        reason=reason,
        target=target,
    )
    await outbox.add(
        conn,
        topic_name(Topic.SYNC_RECEIPTS, settings.topic_prefix),
        record_key,
        outbox.envelope(
            "sync.receipt",
            target,
            receipt,
            correlation_id=event.correlation_id,
            causation_id=event.event_id,
        ),
    )
