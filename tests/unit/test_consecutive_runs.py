"""How a batch of records is split into messages: consecutive runs of one key, bounded."""

from __future__ import annotations

from services.common.outbox import consecutive_runs


def test_runs_follow_the_order_and_split_where_the_group_changes() -> None:
    items = ["a1", "a2", "b1", "a3", "a4", "a5"]

    runs = consecutive_runs(items, lambda i: i[0], limit=10)

    # "a" twice: a later run of a key is its own message, so nothing overtakes "b1".
    assert runs == [["a1", "a2"], ["b1"], ["a3", "a4", "a5"]]


def test_a_run_longer_than_the_limit_becomes_several_messages_in_order() -> None:
    runs = consecutive_runs(range(7), lambda _: "same", limit=3)

    assert runs == [[0, 1, 2], [3, 4, 5], [6]]


def test_nothing_to_send_is_no_message() -> None:
    assert consecutive_runs([], lambda i: i, limit=5) == []


def test_a_group_of_none_is_a_group_like_any_other() -> None:
    runs = consecutive_runs([(None, 1), (None, 2), ("x", 3)], lambda i: i[0], limit=5)

    assert runs == [[(None, 1), (None, 2)], [("x", 3)]]
