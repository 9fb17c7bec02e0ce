"""The soak's verdict (services/simulator/soak.py `judge`), on readings made up for the purpose:
a table that keeps what it is given outgrows its bound, one pruned after its retention does not,
and a run shorter than the bound cannot tell them apart."""

from __future__ import annotations

from services.simulator.soak import (
    PRUNED,
    PrunedReading,
    RoundReading,
    SoakRetention,
    bytes_per_invoice,
    judge,
)

RETENTION = SoakRetention(retention_s=20.0, inbox_retention_s=40.0, retention_interval_s=2.0)
ROUND_S = 10.0
PER_ROUND = 100  # rows written into every pruned table by one round


def readings(rounds: int, kept_for_rounds: int | None, activity: int = 0) -> list[RoundReading]:
    """Round 0 and `rounds` rounds of `ROUND_S` each; every table holds the rows of the last
    `kept_for_rounds` rounds (None: every row ever written), the activity log `activity` rows
    written before the first round and none after."""
    made = []
    for n in range(rounds + 1):
        written = n * PER_ROUND
        held = written if kept_for_rounds is None else min(n, kept_for_rounds) * PER_ROUND
        pruned = {
            kind.key: PrunedReading(held, written, held * 300)
            for kind in PRUNED
            if kind.key != "bridge.bridge_activity"
        }
        pruned["bridge.bridge_activity"] = PrunedReading(activity, activity, 0)
        sizes = {"dataverse": 1_000_000 + n * 50_000, "finance": 1_000_000, "bridge": 1_000_000}
        made.append(RoundReading(n, n * 5, n * ROUND_S, ROUND_S if n else 0.0, pruned, {}, sizes))
    return made


def by_table(readings_: list[RoundReading]) -> dict[str, bool | None]:
    return {v.table: v.levelled for v in judge(readings_, RETENTION)}


def test_a_table_that_keeps_every_row_has_not_levelled_off() -> None:
    verdicts = judge(readings(12, kept_for_rounds=None), RETENTION)
    assert [v.levelled for v in verdicts if v.table != "bridge.bridge_activity"] == [False] * 7
    assert not any(v.too_short for v in verdicts)


def test_tables_holding_one_retention_of_rounds_have_levelled_off() -> None:
    # Three rounds of 10 s: within 20 s of retention, 2 s of interval and a round in flight.
    verdicts = judge(readings(12, kept_for_rounds=3), RETENTION)
    assert all(v.levelled is not False for v in verdicts)
    inbox = next(v for v in verdicts if v.table == "dataverse.dwsim_inbox")
    # 10 rows/s × (40 s + 2 s + a 10 s round)
    assert (inbox.written_per_s, inbox.bound_rows) == (10.0, 520)
    assert inbox.judged_rounds == [9, 10, 11, 12]
    assert inbox.rows_first_rounds == [100, 200, 300, 300]


def test_a_table_holding_more_than_its_retention_has_not_levelled_off() -> None:
    # Five rounds held: more than the outbox's 20 s allows (bound 320), less than the inbox's.
    levelled = by_table(readings(12, kept_for_rounds=5))
    assert levelled["finance.dwsim_outbox"] is False
    assert levelled["finance.dwsim_inbox"] is True


def test_a_table_the_rounds_wrote_nothing_into_is_not_judged() -> None:
    assert by_table(readings(12, kept_for_rounds=3, activity=2))["bridge.bridge_activity"] is None


def test_a_run_shorter_than_the_bound_is_too_short_to_tell() -> None:
    # Three rounds of 10 s against the inbox's 52 s: an unpruned table stays within it too.
    verdicts = judge(readings(3, kept_for_rounds=None), RETENTION)
    inbox = next(v for v in verdicts if v.table == "finance.dwsim_inbox")
    assert inbox.too_short and inbox.levelled is False


def test_growth_per_invoice_over_the_first_and_the_last_third() -> None:
    # 50,000 bytes a round of 5 invoices, from the first round to the last; the pruned tables
    # hold 300 bytes a row, and level off after three rounds.
    growth = bytes_per_invoice(readings(12, kept_for_rounds=3))
    assert growth["databases"] == {"first_rounds": 10_000.0, "last_rounds": 10_000.0}
    # Over rounds 0-4 (20 invoices) six tables (the payloads apart) reach 300 rows of 300 bytes.
    assert growth["pruned_tables"] == {"first_rounds": 27_000.0, "last_rounds": 0.0}
