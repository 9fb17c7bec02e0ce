"""Answers to the bridge on `sync-receipts`, in the transaction that applied or refused."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

from schemas.envelope import Envelope
from schemas.receipts import ReceiptOutcome, SyncReceipt, SyncReceipts
from schemas.topics import Topic, topic_name
from services.common import outbox
from services.common.db import DbConnection
from services.common.settings import Settings

# Answers per message at most: a message stays far below the broker's default size limit
# (about 250 bytes an answer).
MAX_ANSWERS_PER_MESSAGE: Final = 500


@dataclass(frozen=True)
class Answer:
    """A target's answer about one mapped record.

    `event` is the delivery that carried it, `record_id` the bridge's record id (an item's own
    id where a message carries several records), `reason` why it was refused (None: applied).
    """

    event: Envelope[Any]
    record_id: UUID
    record_key: str
    reason: str | None = None


async def answer(
    conn: DbConnection,
    settings: Settings,
    event: Envelope[Any],
    record_key: str,
    target: str,
    reason: str | None = None,
) -> None:
    """Add the receipt for the one mapped record an event carries (its causation id is the
    record id): applied when `reason` is None, else rejected."""
    record_id = event.causation_id or event.event_id
    await answer_many(conn, settings, [Answer(event, record_id, record_key, reason)], target)


async def answer_many(
    conn: DbConnection,
    settings: Settings,
    answers: list[Answer],
    target: str,
) -> None:
    """Add the receipts of one transaction.

    Consecutive answers about one invoice (the mapped event's correlation id; a record
    without one stands alone, by its record key) share a message keyed by it, up to
    `MAX_ANSWERS_PER_MESSAGE`: a batch of one invoice's records is answered in one message,
    and the messages keep the order of the answers, so every answer about one record travels
    on one partition, in order.
    """
    topic = topic_name(Topic.SYNC_RECEIPTS, settings.topic_prefix)

    def group(answer: Answer) -> str:
        return answer.event.correlation_id or answer.record_key

    rows: list[tuple[str, str | None, Envelope[Any]]] = [
        (
            topic,
            group(run[0]),
            outbox.envelope(
                "sync.receipts",
                target,
                SyncReceipts(receipts=[_receipt(a, target) for a in run]),
                correlation_id=run[0].event.correlation_id,
            ),
        )
        for run in outbox.consecutive_runs(answers, group, MAX_ANSWERS_PER_MESSAGE)
    ]
    await outbox.add_many(conn, rows)


def _receipt(answer: Answer, target: str) -> SyncReceipt:
    return SyncReceipt(
        map_name=answer.event.source,
        record_key=answer.record_key,
        source_event_id=answer.record_id,
        outcome=ReceiptOutcome.APPLIED if answer.reason is None else ReceiptOutcome.REJECTED,
        reason=answer.reason,
        target=target,
        answers_event_id=answer.event.event_id,
    )
