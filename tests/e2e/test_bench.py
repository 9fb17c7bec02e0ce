"""`dwsim bench --quick`: the benchmark still runs and produces every figure.

It asserts presence, positivity and how each figure is derived from the others, never a speed:
speed lives in `make bench`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.e2e.conftest import run_dwsim

pytestmark = pytest.mark.integration

FIGURES = {
    "raw_broker": ["produce_consume_msgs_per_s", "latency_p50_ms", "latency_p99_ms"],
    "pipeline": [
        "billed_actuals_per_s_to_staging",
        "drain_window_s",
        "proposals_per_s_first_staged_to_lines",
        "accounting_back_s_after_posting",
        "cpu_ms_per_billed_actual",
        "cpu_cores_in_drain_window",
        "bench_client_cpu_s",
    ],
    "latency": [
        "confirm_to_header_p50_ms",
        "confirm_to_header_p99_ms",
        "confirm_to_lines_p50_ms",
        "confirm_to_lines_p99_ms",
        "sent_invoices_per_s",
        "achieved_invoices_per_s",
    ],
    "large_invoice": ["lines", "confirm_to_all_lines_s"],
    "largest_invoice": ["lines", "confirm_to_all_lines_s"],
    "raw_database": ["commits_per_s"],
    "pipeline_scaled": ["billed_actuals_per_s_to_staging"],
}


def test_quick_bench_produces_every_figure(dwsim_home: Path) -> None:
    result = run_dwsim(dwsim_home, "bench", "--quick", "--json", timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for section, names in FIGURES.items():
        for name in names:
            assert figures[section][name] > 0, f"{section}.{name} = {figures[section][name]}"
    # The raw rate is the median of five transfers, each of them kept.
    each = figures["raw_broker"]["produce_consume_msgs_per_s_each"]
    assert len(each) == 5
    assert sorted(each)[2] == figures["raw_broker"]["produce_consume_msgs_per_s"]
    # The raw commit is durable, as the services commit.
    assert figures["raw_database"]["synchronous_commit"] == "on"
    # Every setting the bench changes is stored with its default and its reason.
    changed = figures["non_default_settings"]
    assert set(changed) == {"receipt_timeout_s"}
    assert all(c["value"] != c["default"] and c["reason"] for c in changed.values())
    # The imported lines are counted, not the requested ones (a quick run asks for 200).
    assert figures["large_invoice"]["lines"] == figures["large_invoice"]["lines_requested"] == 200
    largest = figures["largest_invoice"]
    assert largest["lines"] == largest["lines_requested"] == 300
    # Each service's peak while the invoice ran (and the local broker's).
    assert {"bridge", "dataverse", "finance"} <= set(largest["peak_memory_mb"])
    assert all(mb > 0 for mb in largest["peak_memory_mb"].values())
    # The drain's rate is the billed actuals over its window, and that window holds the
    # staged rows' own span as Finance recorded it.
    pipeline = figures["pipeline"]
    assert pipeline["billed_actuals_per_s_to_staging"] == pytest.approx(
        pipeline["billed_actuals"] / pipeline["drain_window_s"]
    )
    assert pipeline["staged_rows_span_s"] <= pipeline["drain_window_s"]
    assert len(figures["ratios"]) == 3
    assert all(value > 0 for value in figures["ratios"].values())
    # Every target is reported, and none is judged on quick volumes.
    assert len(figures["targets"]) == 8
    assert all(t["measured"] and t["met"] is None for t in figures["targets"])
    services = ["bridge", "dataverse", "finance"]
    # The local broker and PostgreSQL are measured too; ones configured elsewhere are not.
    local = [
        name
        for name, elsewhere in (
            ("broker", "DWSIM_KAFKA_BOOTSTRAP"),
            ("postgres", "DWSIM_DATABASE_URL"),
        )
        if not os.environ.get(elsewhere)
    ]
    for phase in ("pipeline", "pipeline_scaled"):
        cpu = figures[phase]["cpu_s_in_drain_window"]
        assert sorted(cpu) == sorted([*services, *local])
        # CPU time is counted in ticks of 10 ms: a quick run may leave one process at zero.
        assert all(seconds >= 0 for seconds in cpu.values()), cpu
        by_database = figures[phase]["postgres_cpu_s_by_database"]
        if "postgres" in local:
            # Each service's pooled connections live through the run: its database is named.
            assert set(services) <= set(by_database)
            # Tracked by pid over the window, no database's share is ever negative.
            assert all(seconds >= 0 for seconds in by_database.values()), by_database
            # The split and the PostgreSQL total come from the same readings of the window.
            assert sum(by_database.values()) == pytest.approx(cpu["postgres"])
        else:
            assert by_database == {}
    assert sorted(figures["idle_cpu_cores"]) == sorted([*services, *local])
    assert all(cores >= 0 for cores in figures["idle_cpu_cores"].values())
    # Idle is never free: consumers poll the broker every fetch_max_wait_ms.
    assert sum(figures["idle_cpu_cores"].values()) > 0
    for moment in ("memory_mb_start", "memory_mb_end", "memory_growth_mb_during_scaled_run"):
        assert sorted(figures[moment]) == services
    phases = [
        "start",
        "pipeline",
        "latency",
        "memory_rounds",
        "large_invoice",
        "largest_invoice",
        "pipeline_scaled",
    ]
    assert list(figures["memory_mb_by_phase"]) == phases
    for phase in phases:
        assert sorted(figures["memory_mb_by_phase"][phase]) == services
        assert all(mb > 0 for mb in figures["memory_mb_by_phase"][phase].values())
    rounds = figures["memory_rounds"]
    assert rounds["rounds"] == 4
    assert sorted(rounds["memory_mb_per_round_in_second_half"]) == services
    for name in services:
        readings = rounds["memory_mb_after_each_round"][name]
        assert len(readings) == 4
        assert all(mb > 0 for mb in readings)
    assert len(rounds["billed_actuals_per_s_each_round"]) == 4
    assert all(speed > 0 for speed in rounds["billed_actuals_per_s_each_round"])
    # An even count's median is the mean of its two middle values (the upper middle before).
    speeds = sorted(rounds["billed_actuals_per_s_each_round"])
    assert rounds["billed_actuals_per_s_median_of_rounds"] == pytest.approx(
        (speeds[1] + speeds[2]) / 2
    )
    # The 1× rate the ratios use is the median of all five 1× runs, not the first alone.
    one_x = sorted([pipeline["billed_actuals_per_s_to_staging"], *speeds])
    assert figures["billed_actuals_per_s_1x_median"] == pytest.approx(one_x[2])
    factor = figures["sizes"]["scale_factor"]
    assert figures["ratios"][f"throughput_{factor}x_over_1x"] == pytest.approx(
        figures["pipeline_scaled"]["billed_actuals_per_s_to_staging"] / one_x[2]
    )
