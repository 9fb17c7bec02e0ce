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

    def group(answer: tuple[Envelope[Any], str, str | None]) -> str:
        event, key, _ = answer
        return event.correlation_id or key

    rows: list[tuple[str, str | None, Envelope[Any]]] = [
        (
            topic,
            group(run[0]),
            outbox.envelope(
                "sync.receipts",
                target,
                SyncReceipts(receipts=[_receipt(e, k, target, r) for e, k, r in run]),
                correlation_id=run[0][0].correlation_id,
            ),
        )
        for run in outbox.consecutive_runs(answers, group, MAX_ANSWERS_PER_MESSAGE)
    ]
    await outbox.add_many(conn, rows)


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
