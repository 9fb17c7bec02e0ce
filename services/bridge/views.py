"""How the bridge's records look over HTTP: request bodies and one answer model per view.

The models are the admin API's contract (every route declares one, so its OpenAPI page
documents what it returns); `api.py` holds the routes. Fields are as the database row or the
command gives them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from services.bridge.domain import (
    AlertAction,
    ErrorType,
    MapState,
    SyncStatus,
)


class AlertRuleIn(BaseModel):
    """An alert rule's new settings: `count` errors of `error_type` within `window_s` seconds
    fire `action`."""

    model_config = ConfigDict(extra="forbid")

    error_type: ErrorType
    count: int = Field(ge=1, le=1_000_000, description="Errors in the window that fire the rule")
    # Up to 30 days: longer than the paused queue's day, and no error is kept in mind longer.
    window_s: float = Field(
        gt=0, le=30 * 86_400, allow_inf_nan=False, description="Window in seconds"
    )
    action: AlertAction


class InitialSyncIn(BaseModel):
    """Which legal entities an initial sync copies (none named: every one)."""

    model_config = ConfigDict(extra="forbid")

    legal_entities: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=1_000
    )


# --------------------------------------------------------------------------------------------
# Answers (each field as the database row or the command gives it)


class InitialSyncOut(BaseModel):
    """One run of a map's initial sync (docs/bridge.md, "Initial sync")."""

    run_id: UUID
    map: str
    direction: str
    legal_entities: list[str]
    requested_at: datetime
    status: Literal["requested", "running", "completed", "completed_with_errors"]
    rows_expected: int | None = Field(description="Rows the snapshot holds, as Dataverse said")
    rows_received: int
    rows_already_synced: int = Field(description="Rows the bridge held synced: not sent again")
    rows_sent: int
    rows_synced: int
    rows_failed: int
    rows_filtered: int
    rows_in_flight: int
    held_superseded: int = Field(description="Records held while stopped, replaced by the run")
    finished_at: datetime | None


# A moment as it always was written here (`isoformat`: "+00:00", not pydantic's "Z"), so the
# CLI, the console and scripts read the same strings as before the answers were typed.
Timestamp = Annotated[
    datetime, PlainSerializer(datetime.isoformat, return_type=str, when_used="json")
]


class QueueSummary(BaseModel):
    """A map's paused queue in figures."""

    count: int
    bytes: int
    oldest: Timestamp | None


class MapOut(BaseModel):
    """A table map with its state, queue figures and definition (legs, filters, mappings)."""

    name: str
    slug: str
    version: str
    state: MapState
    state_changed_at: Timestamp
    queue: QueueSummary
    definition: dict[str, Any]


class QueuedOut(BaseModel):
    """A record waiting in a map's queue, at its position (1 = next)."""

    position: int
    record_id: UUID
    record_key: str
    invoice_id: str | None
    leg: str
    bytes: int
    queued_at: Timestamp


class QueueLimitsOut(BaseModel):
    """The paused queue's cap (domain.md: one day or 1 GB): past it, new records are refused."""

    max_age_s: float
    max_bytes: int
    max_count: int | None


class QueueOut(QueueSummary):
    """A map's paused queue: figures, its limits and the records at its head."""

    map: str
    state: MapState
    limits: QueueLimitsOut
    records: list[QueuedOut]


class ActivityOut(BaseModel):
    """One entry of the activity log."""

    id: int
    map_name: str | None
    kind: str
    message: str
    invoice_id: str | None
    record_id: UUID | None
    detail: dict[str, Any] | None
    at: Timestamp


class OverLimitTransactionOut(BaseModel):
    """A source transaction past Microsoft's live-sync limits on one map: failed (limits
    applied) or synced and counted as one that would fail in production."""

    transaction_id: UUID
    map_name: str
    records: int
    legal_entities: int
    first_arrival: Timestamp
    invoice_id: str | None
    outcome: Literal["fails", "would_fail"]
    breach: str


class AlertRuleOut(BaseModel):
    """An alert rule: `error_count` errors of `error_type` within `window_s` → `action`."""

    id: int
    map_name: str
    error_type: ErrorType
    error_count: int
    window_s: float
    action: AlertAction
    last_fired_at: Timestamp | None


class ErrorOut(BaseModel):
    """An entry of the error queue, with its record's key, invoice and current status."""

    id: int
    record_id: UUID | None
    map_name: str
    error_type: ErrorType
    reason: str
    catch_up: bool
    status: Literal["open", "retried", "resolved"]
    retries: int
    created_at: Timestamp
    retried_at: Timestamp | None
    resolved_at: Timestamp | None
    record_key: str | None
    invoice_id: str | None
    record_status: SyncStatus | None


class RetryOut(BaseModel):
    """What a retried record became; `reason` only when it failed, is held or filtered."""

    error_id: int
    record_id: str
    record_key: str
    status: SyncStatus
    reason: str | None = None


class RetryAllOut(BaseModel):
    """How many records were retried, and what each became."""

    retried: int
    results: list[RetryOut]


class RecordOut(BaseModel):
    """A bridge record: where it stands, why, how often it was sent, and its documents."""

    record_id: UUID
    seq: int
    map_name: str
    leg_name: str
    source_topic: str
    source_event_id: UUID
    record_key: str
    message_key: str | None
    target_topic: str
    invoice_id: str | None
    correlation_id: str | None
    status: SyncStatus
    reason: str | None
    source_record: dict[str, Any]
    payload: dict[str, Any] | None
    attempts: int
    sent_in_catch_up: bool
    created_at: Timestamp
    updated_at: Timestamp
    last_sent_at: Timestamp | None
    synced_at: Timestamp | None


class FilteredOut(BaseModel):
    """Source rows a map's leg filtered out, of one invoice, for one reason: counted, not
    stored as records (as Microsoft's dual-write keeps no row for them)."""

    map_name: str
    leg_name: str
    invoice_id: str | None
    reason: str
    source_rows: int
    first_at: Timestamp
    last_at: Timestamp
