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
    await answer_many(conn, settings, [(event, record_key, reason)], target)


async def answer_many(
    conn: DbConnection,
    settings: Settings,
    answers: list[tuple[Envelope[Any], str, str | None]],
    target: str,
) -> None:
    """Add the receipts (event, record key, refusal reason or None) in one statement, in order."""
    topic = topic_name(Topic.SYNC_RECEIPTS, settings.topic_prefix)
    await outbox.add_many(
        conn, [(topic, key, _receipt(event, key, target, reason)) for event, key, reason in answers]
    )


def _receipt(
    event: Envelope[Any], record_key: str, target: str, reason: str | None
) -> Envelope[Any]:
    receipt = SyncReceipt(
        map_name=event.source,
        record_key=record_key,
        source_event_id=event.causation_id or event.event_id,
        outcome=ReceiptOutcome.APPLIED if reason is None else ReceiptOutcome.REJECTED,
        reason=reason,
        target=target,
    )
    return outbox.envelope(
        "sync.receipt",
        target,
        receipt,
        correlation_id=event.correlation_id,
        causation_id=event.event_id,
    )
