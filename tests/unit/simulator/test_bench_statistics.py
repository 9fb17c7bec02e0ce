"""The bench's statistics: a quantile of latencies and the growth of memory per round."""

from __future__ import annotations

import pytest

from services.simulator.baselines import percentile, slope_per_step


def test_a_steady_growth_is_its_step() -> None:
    assert slope_per_step([100.0, 102.0, 104.0, 106.0]) == pytest.approx(2.0)


def test_a_plateau_with_one_high_reading_is_far_less_than_last_minus_first() -> None:
    # One reading taken before a collection: last minus first would say 6 MB a round.
    readings = [100.0, 100.0, 100.0, 100.0, 100.0, 130.0]
    assert slope_per_step(readings) < 30.0 / 5
    assert slope_per_step([100.0, 100.5, 99.5, 100.0]) == pytest.approx(-0.1)


def test_a_shrinking_heap_is_a_negative_slope() -> None:
    assert slope_per_step([120.0, 110.0, 100.0]) == pytest.approx(-10.0)


def test_fewer_than_two_readings_have_no_slope() -> None:
    assert slope_per_step([]) == 0.0
    assert slope_per_step([100.0]) == 0.0


def test_an_even_count_median_is_the_mean_of_the_two_middle_values() -> None:
    # The old nearest rank took the upper middle: 880.0 here.
    assert percentile([457.0, 880.0, 600.0, 700.0], 0.5) == pytest.approx(650.0)
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0


def test_percentile_interpolates_between_the_nearest_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == pytest.approx(50.5)
    assert percentile(values, 0.99) == pytest.approx(99.01)
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.99) == 0.0
