"""The scenarios' order check: records of one partition applied in source commit order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.simulator.scenarios import replay_order_breaks

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def same_partition(_: str) -> int:
    return 0


def test_records_applied_in_commit_order_pass_and_are_counted() -> None:
    pairs, breaks = replay_order_breaks(
        ["a", "b", "c"], {"a": at(1), "b": at(2), "c": at(3)}, same_partition
    )
    assert (pairs, breaks) == (2, [])


def test_a_record_applied_before_an_earlier_one_of_its_partition_is_named() -> None:
    pairs, breaks = replay_order_breaks(
        ["a", "b", "c"], {"a": at(1), "b": at(3), "c": at(2)}, same_partition
    )
    assert pairs == 2
    assert len(breaks) == 1 and breaks[0].startswith("c (committed after b) was applied at")


def test_order_across_partitions_is_not_a_promise() -> None:
    # b is applied before a, but in another partition: the broker orders per partition only.
    partition = {"a": 0, "b": 1}.__getitem__
    assert replay_order_breaks(["a", "b"], {"a": at(2), "b": at(1)}, partition) == (0, [])


def test_a_tie_is_not_proof_of_order() -> None:
    _, breaks = replay_order_breaks(["a", "b"], {"a": at(1), "b": at(1)}, same_partition)
    assert breaks
