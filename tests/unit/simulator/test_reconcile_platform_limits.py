"""The reconcile report counts the source transactions past Microsoft's live-sync limits: with
the limits off, what would fail in production; with them on, what the bridge failed. A
transaction that reached both maps counts once."""

from __future__ import annotations

import json

from rich.console import Console

from services.simulator.reconcile import OverLimitTransaction, reconcile, scoped
from services.simulator.report import print_report
from tests.unit.simulator.test_reconcile import agreeing

BREACH = "platform limit: transaction of 1,501 records > 1,000 records per dual-write transaction"


def over(outcome: str, transaction_id: str = "tx-1") -> OverLimitTransaction:
    return OverLimitTransaction(transaction_id, "inv-1", 1_501, outcome, BREACH)


def test_a_transaction_on_two_maps_is_counted_once_as_would_fail_in_production() -> None:
    report = reconcile(agreeing(over_limit_transactions=(over("would_fail"), over("would_fail"))))

    assert report.agree  # synced whole: not a difference between the sides
    assert len(report.would_fail) == 1
    assert report.failed_by_limits == []
    assert report.limits_sentence() == (
        "1 transaction would fail in production: "
        "transaction of 1,501 records > 1,000 records per dual-write transaction"
    )
    assert report.to_json()["transactions_would_fail_in_production"][0]["records"] == 1_501


def test_the_printed_report_says_what_would_fail_in_production() -> None:
    console = Console(record=True, width=200)
    print_report(console, reconcile(agreeing(over_limit_transactions=(over("would_fail"),))))
    assert "1 transaction would fail in production: transaction of 1,501 records > 1,000" in (
        console.export_text()
    )


def test_transactions_failed_by_the_limits_are_counted_apart() -> None:
    report = reconcile(
        agreeing(over_limit_transactions=(over("fails"), over("would_fail", "tx-2")))
    )
    assert [t.transaction_id for t in report.failed_by_limits] == ["tx-1"]
    assert [t.transaction_id for t in report.would_fail] == ["tx-2"]
    assert "1 transaction failed by Microsoft's limits" in (report.limits_sentence() or "")
    json.dumps(report.to_json())


def test_no_transaction_past_the_limits_says_nothing() -> None:
    report = reconcile(agreeing())
    assert report.limits_sentence() is None
    assert report.to_json()["transactions_would_fail_in_production"] == []


def test_scoping_keeps_only_the_transactions_of_the_tests_own_invoices() -> None:
    other = OverLimitTransaction("tx-9", "inv-9", 1_501, "would_fail", BREACH)
    snapshot = agreeing(over_limit_transactions=(over("would_fail"), other))
    mine = scoped(snapshot, ["inv-1"], [])
    assert [t.transaction_id for t in mine.over_limit_transactions] == ["tx-1"]
