"""`sync-receipts`: a target's answers to the mapped records it applied or refused, and the DLQ
record format."""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


class ReceiptOutcome(StrEnum):
    """What the target did with a mapped record."""

    APPLIED = "applied"
    REJECTED = "rejected"


class SyncReceipt(BaseModel):
    """Answer of Finance or Dataverse to one mapped record the bridge sent.

    `source_event_id` is the bridge's record id: the item's `record_id` in a message that
    carries several records, else the mapped event's `causation_id` (the bridge sets both;
    every re-send of the record carries the same id), and `map_name` the mapped event's
    `source`. A target answers every delivery it applies or refuses, re-sends included,
    so a receipt lost with a broker restart is answered again at the next re-send.
    """

    model_config = ConfigDict(frozen=True)

    map_name: str
    record_key: str
    source_event_id: UUID
    outcome: ReceiptOutcome
    reason: str | None = None
    target: str
    # The mapped event (delivery) this answers: a re-send of the record is another event.
    answers_event_id: UUID


class SyncReceipts(BaseModel):
    """What one message on `sync-receipts` carries: the answers of one target transaction to
    the mapped records of one invoice (or of one record without an invoice), in order.

    A target applies a fetched batch of records in one transaction; it answers them in as few
    messages, not one message per record: a 10,000-line invoice was 10,000 receipts, a third
    of everything the bridge read for it.
    """

    model_config = ConfigDict(frozen=True)

    receipts: list[SyncReceipt] = Field(min_length=1)


class DeadLetter(BaseModel):
    """What a `.dlq` topic holds: the reason and where the original bytes came from.

    A letter never exceeds the producer's size limit: when the original would not fit, `value`
    holds as much of it as fits and `truncated` is set; `size` and `sha256` still describe the
    whole original, which its topic, partition and offset locate on the broker (see
    services/common/dead_letters.py for why the rest is not kept elsewhere).
    """

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int
    key: str | None
    reason: str
    value: str  # the original bytes, decoded as UTF-8 with replacement (a prefix if truncated)
    # Added with the size limit; defaults keep letters written before them readable.
    headers: list[tuple[str, str]] = Field(
        default_factory=list, description="The original's headers, values decoded as UTF-8."
    )
    size: int | None = Field(default=None, description="The original value's length in bytes.")
    sha256: str | None = Field(default=None, description="Hex SHA-256 of the original value.")
    truncated: bool = Field(
        default=False, description="The letter carries only part of the value, key or headers."
    )
