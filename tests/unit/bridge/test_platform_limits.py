"""Microsoft's live-sync limits as pure rules: 1,000 records, 250 legal entities (40 for initial
sync) and two minutes per dual-write transaction (domain.md, "Limits Microsoft documents")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from services.bridge.domain import (
    MICROSOFT_LIMITS,
    LimitOutcome,
    PlatformLimits,
    SourceTransaction,
    limit_outcome,
    transaction_breach,
)

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def transaction(records: int = 1, legal_entities: int = 1) -> SourceTransaction:
    return SourceTransaction(uuid4(), records, legal_entities, T0)


@pytest.mark.parametrize("records", [1, 501, 1_000])
def test_a_transaction_of_up_to_1000_records_is_within_the_limit(records: int) -> None:
    assert transaction_breach(transaction(records), T0) is None


def test_a_1500_line_invoice_is_a_transaction_of_1501_records_past_the_limit() -> None:
    reason = transaction_breach(transaction(1_501), T0)
    assert reason == (
        "platform limit: transaction of 1,501 records > 1,000 records per dual-write transaction"
    )


def test_1001_records_is_one_too_many() -> None:
    assert transaction_breach(transaction(1_001), T0) is not None


def test_live_sync_handles_250_legal_entities_per_transaction() -> None:
    assert transaction_breach(transaction(legal_entities=250), T0) is None
    reason = transaction_breach(transaction(legal_entities=251), T0)
    assert (
        reason
        == "platform limit: transaction of 251 legal entities > 250 per live-sync transaction"
    )


def test_initial_sync_handles_40_legal_entities_per_transaction() -> None:
    assert transaction_breach(transaction(legal_entities=40), T0, initial_sync=True) is None
    reason = transaction_breach(transaction(legal_entities=41), T0, initial_sync=True)
    assert (
        reason
        == "platform limit: transaction of 41 legal entities > 40 per initial-sync transaction"
    )
    assert transaction_breach(transaction(legal_entities=41), T0) is None  # live sync: fine


def test_records_arriving_two_minutes_after_the_first_are_within_the_limit() -> None:
    assert transaction_breach(transaction(), T0 + timedelta(minutes=2)) is None


def test_records_still_arriving_past_two_minutes_fail_the_transaction() -> None:
    reason = transaction_breach(transaction(), T0 + timedelta(minutes=2, seconds=1))
    assert (
        reason == "platform limit: transaction still delivering after 121 s > 120 s "
        "per dual-write transaction"
    )


def test_the_record_count_is_named_before_the_duration() -> None:
    reason = transaction_breach(transaction(2_000), T0 + timedelta(minutes=5)) or ""
    assert "2,000 records" in reason


def test_microsofts_documented_figures() -> None:
    assert MICROSOFT_LIMITS.max_records == 1_000
    assert MICROSOFT_LIMITS.max_duration == timedelta(minutes=2)
    assert MICROSOFT_LIMITS.max_legal_entities == 250
    assert MICROSOFT_LIMITS.max_legal_entities_initial_sync == 40


def test_past_the_limits_a_transaction_fails_only_when_microsofts_limits_are_applied() -> None:
    assert limit_outcome(None, PlatformLimits.MICROSOFT) is LimitOutcome.WITHIN
    assert limit_outcome(None, PlatformLimits.NONE) is LimitOutcome.WITHIN
    assert limit_outcome("too big", PlatformLimits.MICROSOFT) is LimitOutcome.FAILS
    assert limit_outcome("too big", PlatformLimits.NONE) is LimitOutcome.WOULD_FAIL
