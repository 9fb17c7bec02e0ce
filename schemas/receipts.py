"""`sync-receipts`: a target's answer for one mapped record, and the DLQ record format."""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, ConfigDict


class ReceiptOutcome(StrEnum):
    """What the target did with a mapped record."""

    APPLIED = "applied"
    REJECTED = "rejected"


class SyncReceipt(BaseModel):
    """Answer of Finance or Dataverse to one mapped record the bridge sent.

    `source_event_id` is the bridge's record id: the mapped event's `causation_id` (the bridge
    sets it; every re-send of the record carries the same one), and `map_name` the mapped
    event's `source`. A target answers every delivery it applies or refuses, re-sends included,
    so a receipt lost with a broker restart is answered again at the next re-send.
    """

    model_config = ConfigDict(frozen=True)

    map_name: str
    record_key: str
    source_event_id: UUID
    outcome: ReceiptOutcome
    reason: str | None = None
    target: str


class DeadLetter(BaseModel):
    """What a `.dlq` topic holds: the reason and where the original bytes came from."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int
    key: str | None
    reason: str
    value: str  # the original bytes, decoded as UTF-8 with replacement
