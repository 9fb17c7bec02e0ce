"""Answers to the bridge on `sync-receipts`, in the transaction that applied or refused."""

from __future__ import annotations

from typing import Any, Final

from schemas.envelope import Envelope
from schemas.receipts import ReceiptOutcome, SyncReceipt, SyncReceipts
from schemas.topics import Topic, topic_name
from services.common import outbox
from services.common.db import DbConnection
from services.common.settings import Settings

# Answers per message at most: a message stays far below the broker's default size limit
# (about 250 bytes an answer).
MAX_ANSWERS_PER_MESSAGE: Final = 500


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
    """Add the receipts (event, record key, refusal reason or None) of one transaction.

    Consecutive answers about one invoice (the mapped event's correlation id; a record
    without one stands alone, by its record key) share a message keyed by it, up to
    `MAX_ANSWERS_PER_MESSAGE`: a batch of one invoice's records is answered in one message,
    and the messages keep the order of the answers, so every answer about one record travels
    on one partition, in order.
    """
    topic = topic_name(Topic.SYNC_RECEIPTS, settings.topic_prefix)
    runs: list[tuple[str, str | None, list[SyncReceipt]]] = []
    for event, key, reason in answers:
        group = event.correlation_id or key
        if not runs or runs[-1][0] != group or len(runs[-1][2]) >= MAX_ANSWERS_PER_MESSAGE:
            runs.append((group, event.correlation_id, []))
        runs[-1][2].append(_receipt(event, key, target, reason))
    await outbox.add_many(
        conn,
        [
            (
                topic,
                group,
                outbox.envelope(
                    "sync.receipts",
                    target,
                    SyncReceipts(receipts=receipts),
                    correlation_id=correlation_id,
                ),
            )
            for group, correlation_id, receipts in runs
        ],
    )


def _receipt(event: Envelope[Any], record_key: str, target: str, reason: str | None) -> SyncReceipt:
    return SyncReceipt(
        map_name=event.source,
        record_key=record_key,
        source_event_id=event.causation_id or event.event_id,
        outcome=ReceiptOutcome.APPLIED if reason is None else ReceiptOutcome.REJECTED,
        reason=reason,
        target=target,
        answers_event_id=event.event_id,
    )
