"""Reconciliation explains each kind of difference, and agrees when the sides agree."""

from __future__ import annotations

from decimal import Decimal

from services.simulator.reconcile import (
    BridgeRecord,
    ConfirmedInvoice,
    Proposal,
    Snapshot,
    UnimportedRow,
    reconcile,
)

PROPOSAL_MAP = "Project invoice proposal V2 (invoices)"
ACTUALS_MAP = "Project Operations integration actuals (msdyn_actuals)"


def invoice(iid: str = "inv-1", missing: tuple[str, ...] = ()) -> ConfirmedInvoice:
    return ConfirmedInvoice(iid, "USPM", "USD", Decimal("1600.00"), 2, ("a1", "a2"), missing)


def proposal(iid: str = "inv-1", **changes: object) -> Proposal:
    values: dict[str, object] = {
        "proposal_id": iid,
        "currency": "USD",
        "total_amount": Decimal("1600.00"),
        "status": "posted",
        "line_count": 2,
        "waiting_reason": None,
    }
    values.update(changes)
    return Proposal(**values)  # type: ignore[arg-type]


def test_sides_that_agree_report_no_difference() -> None:
    report = reconcile(Snapshot((invoice(),), (proposal(),)))
    assert report.agree
    assert report.to_json()["differences"] == []


def test_missing_proposal_queued_behind_paused_map_is_explained() -> None:
    record = BridgeRecord("inv-1", "inv-1", PROPOSAL_MAP, "queued")
    report = reconcile(Snapshot((invoice(),), (), (record,)))
    [diff] = report.differences
    assert diff.kind == "confirmed invoice has no proposal"
    assert diff.cause == f"proposal header: queued: map '{PROPOSAL_MAP}' is paused"
    assert diff.explained and not report.agree


def test_missing_proposal_failed_carries_targets_reason() -> None:
    record = BridgeRecord("inv-1", "inv-1", PROPOSAL_MAP, "failed", "unknown legal entity XX")
    [diff] = reconcile(Snapshot((invoice(),), (), (record,))).differences
    assert "failed" in diff.cause and "unknown legal entity XX" in diff.cause


def test_missing_proposal_the_bridge_never_saw_is_unexplained() -> None:
    report = reconcile(Snapshot((invoice(),), ()))
    assert [d.explained for d in report.differences] == [False]
    assert len(report.unexplained) == 1


def test_proposal_without_lines_gives_finances_waiting_reason() -> None:
    waiting = proposal(
        line_count=0, status="open", waiting_reason="project transaction not posted yet"
    )
    [diff] = reconcile(Snapshot((invoice(),), (waiting,))).differences
    assert diff.cause == "waiting: project transaction not posted yet"
    assert diff.explained


def test_amount_and_currency_differences_are_unexplained() -> None:
    wrong = proposal(currency="EUR", total_amount=Decimal("1500.00"))
    kinds = {d.kind: d.explained for d in reconcile(Snapshot((invoice(),), (wrong,))).differences}
    assert kinds == {"currency differs": False, "amount differs": False}


def test_line_count_mismatch_is_reported() -> None:
    [diff] = reconcile(Snapshot((invoice(),), (proposal(line_count=1),))).differences
    assert diff.kind == "line count differs"


def test_posted_invoice_whose_actuals_lack_accounting_names_the_pending_record() -> None:
    record = BridgeRecord("a2", "inv-1", ACTUALS_MAP, "pending", attempts=2)
    report = reconcile(Snapshot((invoice(missing=("a2",)),), (proposal(),), (record,)))
    [diff] = report.differences
    assert diff.kind == "posted invoice's actuals lack accounting detail"
    assert "pending" in diff.cause and "attempt 2" in diff.cause


def test_proposal_with_no_dataverse_origin_is_unexplained() -> None:
    [diff] = reconcile(Snapshot((), (proposal("ghost"),))).differences
    assert diff.kind == "proposal with no Dataverse origin" and not diff.explained


def test_unimported_staged_row_of_a_proposal_with_lines_is_listed() -> None:
    row = UnimportedRow("a9", "inv-1", "billed_sales", "no exchange rate for EUR→USD")
    [diff] = reconcile(Snapshot((invoice(),), (proposal(),), (), (row,))).differences
    assert diff.kind == "staged row not imported" and "EUR→USD" in diff.cause
