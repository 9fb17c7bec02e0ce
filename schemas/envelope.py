"""The envelope every dwsim event travels in, whatever its topic."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any, Generic, TypeVar
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

P = TypeVar("P", bound=BaseModel)


class Envelope(BaseModel, Generic[P]):
    """Identity, provenance and payload of one event.

    `event_id` is what inboxes deduplicate on; `correlation_id` is the invoice id wherever there
    is one, so logs and traces follow an invoice across the three services.
    """

    # Parsing caches JSON keys only: an event's values are mostly ids seen once, and caching
    # them cost more than it saved (4.0 against 3.5 µs per record parsed) and kept up to 16,384
    # of them alive in every consumer (docs/benchmark.md, "Memory growth per round").
    model_config = ConfigDict(frozen=True, cache_strings="keys")

    event_id: UUID = Field(default_factory=uuid4)
    event_type: str
    schema_version: int = 1
    occurred_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    source: str
    correlation_id: str | None = None
    causation_id: UUID | None = None
    payload: P


class EnvelopeHeader(BaseModel):
    """The envelope without its payload: what a consumer can read from any message."""

    event_id: UUID
    event_type: str
    schema_version: int
    occurred_at: AwareDatetime
    source: str
    correlation_id: str | None = None
    causation_id: UUID | None = None


@cache
def envelope_of(payload_model: type[BaseModel]) -> type[Envelope[Any]]:
    """`Envelope[payload_model]`, made once: pydantic looks a parametrised generic up on every
    subscript, which showed in the profile of consumers validating thousands of events."""
    return Envelope[payload_model]  # type: ignore[valid-type]
