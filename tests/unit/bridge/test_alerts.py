"""Alert rules: count errors of one type in a sliding window, fire once per crossing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.bridge.domain import (
    AlertAction,
    AlertRule,
    BridgeRuleError,
    ErrorType,
    default_alert_rule,
    evaluate_alerts,
)

T0 = datetime(2025, 3, 31, 9, 0, tzinfo=UTC)
RULE = default_alert_rule("m")


def minutes(*offsets: float) -> list[datetime]:
    return [T0 + timedelta(minutes=m) for m in offsets]


def test_default_rule_pauses_on_ten_receipt_time_outs_in_15_minutes() -> None:
    rule = default_alert_rule("m")
    assert rule == AlertRule("m", ErrorType.TIMEOUT, 10, timedelta(minutes=15), AlertAction.PAUSE)


def test_fires_at_the_tenth_error_within_15_minutes() -> None:
    stamps = minutes(*range(10))  # one a minute, 0..9
    for n in range(1, 10):
        seen = stamps[:n]
        assert evaluate_alerts([RULE], {ErrorType.TIMEOUT: seen}, seen[-1]) == []
    (alert,) = evaluate_alerts([RULE], {ErrorType.TIMEOUT: stamps}, stamps[-1])
    assert alert.action is AlertAction.PAUSE
    assert alert.error_count == 10
    assert alert.fired_at == stamps[-1]
    assert "10 timeout errors" in alert.reason


def test_ten_errors_spread_over_20_minutes_never_fire() -> None:
    stamps = minutes(*[i * 20 / 9 for i in range(10)])  # 0 .. 20 min, ~2.2 min apart
    assert stamps[-1] - stamps[0] == timedelta(minutes=20)
    for n in range(1, 11):
        seen = stamps[:n]
        assert evaluate_alerts([RULE], {ErrorType.TIMEOUT: seen}, seen[-1]) == []


def test_an_error_exactly_one_window_old_no_longer_counts() -> None:
    stamps = minutes(0, *range(7, 16))  # 10 errors; the first is 15 min before the last
    assert evaluate_alerts([RULE], {ErrorType.TIMEOUT: stamps}, stamps[-1]) == []


def test_data_errors_never_pause_a_map_by_the_default_rule() -> None:
    # One bad message of ten actuals: ten refusals at once, or ten unmappable records, or a
    # full queue, are entries in the error queue; only a side that does not answer pauses.
    at_once = [T0] * 10
    for data_error in (ErrorType.TARGET_REFUSED, ErrorType.MAPPING, ErrorType.QUEUE_LIMIT):
        assert evaluate_alerts([RULE], {data_error: at_once}, T0) == [], data_error
    every_data_error = {
        ErrorType.TARGET_REFUSED: at_once,
        ErrorType.MAPPING: at_once,
        ErrorType.QUEUE_LIMIT: at_once,
        ErrorType.ONE_WAY_VIOLATION: at_once,
    }
    assert evaluate_alerts([RULE], every_data_error, T0) == []


def test_time_outs_among_data_errors_count_alone() -> None:
    errors = {ErrorType.TIMEOUT: minutes(0, 1, 2, 3, 4), ErrorType.MAPPING: minutes(5, 6, 7, 8, 9)}
    assert evaluate_alerts([RULE], errors, T0 + timedelta(minutes=9)) == []
    errors[ErrorType.TIMEOUT] = minutes(*range(10))
    (alert,) = evaluate_alerts([RULE], errors, T0 + timedelta(minutes=9))
    assert alert.error_count == 10  # the five mapping errors are not among them


def test_typed_rule_counts_only_its_type() -> None:
    rule = AlertRule("m", ErrorType.TARGET_REFUSED, 3, timedelta(minutes=5), AlertAction.STOP)
    errors = {ErrorType.TIMEOUT: minutes(0, 1, 2), ErrorType.TARGET_REFUSED: minutes(1, 2)}
    assert evaluate_alerts([rule], errors, T0 + timedelta(minutes=2)) == []
    errors[ErrorType.TARGET_REFUSED] = minutes(1, 2, 3)
    (alert,) = evaluate_alerts([rule], errors, T0 + timedelta(minutes=3))
    assert alert.action is AlertAction.STOP


def test_fires_once_per_crossing() -> None:
    stamps = minutes(*range(10))
    now = stamps[-1]
    (alert,) = evaluate_alerts([RULE], {ErrorType.TIMEOUT: stamps}, now)
    last_fired = {RULE: alert.fired_at}

    # One more error right after: the ten before the firing do not count again.
    more = [*stamps, now + timedelta(seconds=30)]
    later = now + timedelta(seconds=30)
    assert evaluate_alerts([RULE], {ErrorType.TIMEOUT: more}, later, last_fired) == []

    # Ten new errors after the firing cross the threshold again.
    fresh = [now + timedelta(seconds=s) for s in range(1, 11)]
    again = evaluate_alerts([RULE], {ErrorType.TIMEOUT: stamps + fresh}, fresh[-1], last_fired)
    assert [a.error_count for a in again] == [10]


def test_future_errors_do_not_count() -> None:
    assert evaluate_alerts([RULE], {ErrorType.TIMEOUT: minutes(*range(10))}, T0) == []


def test_several_rules_fire_independently() -> None:
    notify = AlertRule("m", ErrorType.TIMEOUT, 2, timedelta(minutes=1), AlertAction.NOTIFY)
    fired = evaluate_alerts(
        [RULE, notify], {ErrorType.TIMEOUT: minutes(0, 0.5)}, T0 + timedelta(minutes=0.5)
    )
    assert [a.rule for a in fired] == [notify]


def test_rules_of_several_maps_are_refused() -> None:
    with pytest.raises(BridgeRuleError, match="rules of one map"):
        evaluate_alerts([RULE, default_alert_rule("other")], {}, T0)


@pytest.mark.parametrize(
    ("count", "window", "message"),
    [(0, timedelta(minutes=1), "count"), (1, timedelta(0), "window")],
)
def test_invalid_rules_are_refused(count: int, window: timedelta, message: str) -> None:
    with pytest.raises(BridgeRuleError, match=message):
        AlertRule("m", ErrorType.MAPPING, count, window, AlertAction.NOTIFY)
