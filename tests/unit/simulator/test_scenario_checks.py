"""The scenarios' order check: records sharing a partition delivered in source commit order."""

from __future__ import annotations

from services.simulator.scenarios import replay_order_breaks


def test_records_delivered_in_commit_order_pass_and_are_counted() -> None:
    delivered = {"a": (0, 1), "b": (0, 2), "c": (0, 3)}
    assert replay_order_breaks(["a", "b", "c"], delivered) == (2, [])


def test_a_record_delivered_before_an_earlier_one_of_its_partition_is_named() -> None:
    pairs, breaks = replay_order_breaks(["a", "b", "c"], {"a": (0, 1), "b": (0, 3), "c": (0, 2)})
    assert pairs == 2
    assert breaks == ["partition 0: c (committed after b) at offset 2, b at 3"]


def test_order_across_partitions_is_not_a_promise() -> None:
    # b stands before a in offsets, but in another partition: the broker orders per partition.
    assert replay_order_breaks(["a", "b"], {"a": (0, 5), "b": (1, 1)}) == (0, [])


def test_a_record_never_delivered_is_left_to_the_caller() -> None:
    # Only delivered records can be compared; the scenario checks that all were delivered.
    assert replay_order_breaks(["a", "b", "c"], {"a": (0, 1), "c": (0, 2)}) == (1, [])
