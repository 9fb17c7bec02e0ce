"""The paused queue's limits: one day, 1 GiB by default; refused visibly past them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.bridge.domain import (
    GIB,
    Admit,
    QueueLimitReached,
    QueueLimits,
    Refuse,
    queue_admission,
)

DEFAULTS = QueueLimits()


def test_defaults_are_microsofts() -> None:
    assert DEFAULTS.max_age == timedelta(days=1)
    assert DEFAULTS.max_size_bytes == 1024**3 == GIB
    assert DEFAULTS.max_count is None


def test_empty_queue_admits() -> None:
    assert queue_admission(0, 0, None, DEFAULTS) == Admit()


def test_below_every_limit_admits() -> None:
    assert queue_admission(10_000, GIB - 1, timedelta(hours=23, minutes=59), DEFAULTS) == Admit()


def test_oldest_record_a_day_old_refuses() -> None:
    result = queue_admission(5, 100, timedelta(days=1), DEFAULTS)
    assert isinstance(result, Refuse)
    assert "oldest queued record is 1 day, 0:00:00 old" in result.reason
    assert "resume the map" in result.reason


def test_one_gib_queued_refuses() -> None:
    result = queue_admission(5, GIB, timedelta(minutes=1), DEFAULTS)
    assert isinstance(result, Refuse)
    assert f"{GIB} bytes queued" in result.reason


def test_count_limit_when_configured() -> None:
    limits = QueueLimits(max_count=3)
    assert queue_admission(2, 10, timedelta(seconds=1), limits) == Admit()
    refused = queue_admission(3, 10, timedelta(seconds=1), limits)
    assert isinstance(refused, Refuse)
    assert "3 records queued (limit 3)" in refused.reason


def test_configurable_limits() -> None:
    limits = QueueLimits(max_age=timedelta(minutes=5), max_size_bytes=1000)
    assert isinstance(queue_admission(1, 10, timedelta(minutes=5), limits), Refuse)
    assert isinstance(queue_admission(1, 1000, timedelta(minutes=1), limits), Refuse)
    assert queue_admission(1, 999, timedelta(minutes=4), limits) == Admit()


def test_refusal_can_be_raised() -> None:
    with pytest.raises(QueueLimitReached, match="queue limit reached"):
        Refuse("queue limit reached: x").raise_()
