"""Reconciliation compares the sides by id, field by field: each kind of difference is found on a
seeded difference, named with its id and cause, and the sides that agree report none."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

from services.simulator.reconcile import (
    ACCOUNTING,
    BILLED_LINES,
    JOURNALED,
    POSTED,
    SKIP_SYNC,
    STAGED,
    TOTALS,
    Actual,
    BridgeRecord,
    ConfirmedInvoice,
    CustomerInvoice,
    Difference,
    FilteredRows,
    JournalLine,
    Proposal,
    ProposalLine,
    Report,
    Snapshot,
    StagingRow,
    reconcile,
    scoped,
)

PROPOSAL_MAP = "Project invoice proposal V2 (invoices)"
ACTUALS_MAP = "Project Operations integration actuals (msdyn_actuals)"
STAGING_TOPIC = "fo-actuals-staging"
ACCOUNTING_TOPIC = "dv-actuals-accounting"
POSTED_ON = date(2026, 10, 1)
D = Decimal


def billed(actual_id: str, quantity: str, amount: str, voucher: str | None = "VOU-9") -> Actual:
    return Actual(
        actual_id,
        "billed_sales",
        "chargeable",
        D(quantity),
        D(amount),
        "USD",
        invoice_id="inv-1",
        voucher=voucher,
        voucher_date=POSTED_ON if voucher else None,
        accounting_currency_amount=D(amount) if voucher else None,
    )


def journaled(actual_id: str, kind: str, amount: str, voucher: str = "VOU-1") -> Actual:
    return Actual(
        actual_id,
        kind,
        "chargeable",
        D("8"),
        D(amount),
        "USD",
        voucher=voucher,
        voucher_date=POSTED_ON,
        accounting_currency_amount=D(amount),
    )


def staged(actual: Actual, journal_id: str | None = None) -> StagingRow:
    """Finance's row of an actual, stamped as Finance posted it."""
    return StagingRow(
        actual.actual_id,
        actual.transaction_type,
        actual.billing_type,
        actual.quantity,
        actual.amount,
        actual.currency,
        invoice_id=actual.invoice_id,
        imported=True,
        journal_id=journal_id,
        voucher=actual.voucher,
        voucher_date=actual.voucher_date,
        accounting_currency_amount=actual.accounting_currency_amount,
    )


def line(actual: Actual) -> ProposalLine:
    return ProposalLine(
        actual.actual_id, actual.quantity, actual.amount, actual.currency, actual.billing_type
    )


def journal_line(actual: Actual) -> JournalLine:
    return JournalLine(
        "PJ-1", actual.actual_id, actual.quantity, actual.amount, actual.currency, actual.voucher
    )


B1 = billed("b1", "8", "1600.00")
B2 = billed("b2", "2", "400.00")
COST = journaled("c1", "cost", "800.00", "VOU-1")
UNBILLED = journaled("u1", "unbilled_sales", "1600.00", "VOU-2")
# The negated unbilled reversal confirmation makes with skip sync: it never goes to Finance.
REVERSAL = replace(UNBILLED, actual_id="r1", amount=D("-1600.00"), skip_sync=True, voucher=None)

INVOICE = ConfirmedInvoice("inv-1", "USPM", "USD", D("2000.00"), D("100.00"), 2)
PROPOSAL = Proposal(
    "inv-1", "USD", D("100.00"), "posted", (line(B1), line(B2)), invoice_number="CIV-1"
)
CUSTOMER_INVOICE = CustomerInvoice(
    "CIV-1", "inv-1", "USD", D("2000.00"), D("100.00"), D("2100.00"), "VOU-9"
)


def agreeing(**changes: object) -> Snapshot:
    """One posted invoice of two billed lines, a journaled cost and unbilled actual, and a
    skip-sync reversal: every side holds the same, unless `changes` says otherwise."""
    snapshot = Snapshot(
        invoices=(INVOICE,),
        proposals=(PROPOSAL,),
        actuals=(B1, B2, COST, UNBILLED, REVERSAL),
        staging_rows=(staged(B1), staged(B2), staged(COST, "PJ-1"), staged(UNBILLED, "PJ-1")),
        journal_lines=(journal_line(COST), journal_line(UNBILLED)),
        customer_invoices=(CUSTOMER_INVOICE,),
    )
    return replace(snapshot, **changes)  # type: ignore[arg-type]


def only(report: Report) -> Difference:
    [difference] = report.differences
    return difference


def test_sides_that_agree_report_no_difference_and_say_what_they_compared() -> None:
    report = reconcile(agreeing())
    assert report.agree, report.differences
    assert report.to_json()["differences"] == []
    assert report.count(BILLED_LINES) == 2
    assert report.count(TOTALS) == 1
    assert report.count(POSTED) == 1
    assert report.count(ACCOUNTING) == 4
    assert report.count(STAGED) == 2
    assert report.count(JOURNALED) == 2
    assert report.count(SKIP_SYNC) == 1
    assert report.summary().startswith("1 confirmed invoices compared with their proposals")
    assert "2 billed lines compared with their proposal lines by actual id, quantity" in (
        report.summary()
    )


# --- seeded differences, one per kind ------------------------------------------------------------


def test_a_wrong_line_amount_is_found_on_its_actual_though_the_header_total_agrees() -> None:
    wrong = replace(PROPOSAL, lines=(replace(line(B1), amount=D("1500.00")), line(B2)))
    report = reconcile(agreeing(proposals=(wrong,)))
    kinds = {d.kind: d for d in report.differences}
    line_diff = kinds["proposal line differs from its billed actual"]
    assert line_diff.actual_id == "b1" and not line_diff.explained
    assert line_diff.cause == "billed actual b1: amount Dataverse 1600.00, Finance line 1500.00"
    # Finance's own net (its lines) no longer matches Dataverse's, nor does the posted invoice.
    assert kinds["net amount differs"].cause == (
        "Dataverse invoice net 2000.00, Finance's chargeable proposal lines 1900.00"
    )
    assert "net proposal 1900.00, customer invoice 2000.00" in (
        kinds["customer invoice differs from its proposal"].cause
    )


def test_swapped_lines_are_found_though_count_and_totals_agree() -> None:
    # Line b1 carries b2's quantity and amount and vice versa: same count, same net.
    swapped = replace(
        PROPOSAL,
        lines=(
            replace(line(B1), quantity=B2.quantity, amount=B2.amount),
            replace(line(B2), quantity=B1.quantity, amount=B1.amount),
        ),
    )
    report = reconcile(agreeing(proposals=(swapped,)))
    assert [(d.kind, d.actual_id) for d in report.differences] == [
        ("proposal line differs from its billed actual", "b1"),
        ("proposal line differs from its billed actual", "b2"),
    ]
    assert report.differences[0].cause == (
        "billed actual b1: quantity Dataverse 8, Finance line 2; "
        "amount Dataverse 1600.00, Finance line 400.00"
    )


def test_a_line_of_another_invoices_actual_is_named() -> None:
    foreign = replace(B2, actual_id="x9", invoice_id="inv-2")
    moved = replace(PROPOSAL, lines=(line(B1), line(foreign)))
    report = reconcile(
        agreeing(
            proposals=(moved,),
            actuals=(*agreeing().actuals, foreign),
            staging_rows=(*agreeing().staging_rows, staged(foreign)),
        )
    )
    kinds = {(d.kind, d.actual_id): d for d in report.differences}
    missing = kinds[("billed actual has no proposal line", "b2")]
    assert missing.cause == "staged row imported, but not as a line of proposal inv-1 (journal —)"
    extra = kinds[("proposal line with no billed actual of this invoice", "x9")]
    assert extra.cause == "line for actual x9: the actual is a billed_sales actual of invoice inv-2"


def test_a_wrong_voucher_on_an_actual_is_found() -> None:
    wrong = replace(B2, voucher="VOU-7")
    report = reconcile(agreeing(actuals=(B1, wrong, COST, UNBILLED, REVERSAL)))
    difference = only(report)
    assert difference.kind == "accounting detail differs from Finance's posting"
    assert difference.actual_id == "b2" and difference.invoice_id == "inv-1"
    assert difference.cause == "actual b2: voucher Dataverse VOU-7, Finance VOU-9"


def test_a_stamp_that_is_not_the_posted_documents_voucher_is_found() -> None:
    # Dataverse and the staged row agree with each other, but the journal posted c1 on VOU-5.
    lines = (replace(journal_line(COST), voucher="VOU-5"), journal_line(UNBILLED))
    difference = only(reconcile(agreeing(journal_lines=lines)))
    assert difference.actual_id == "c1"
    assert (
        difference.cause
        == "actual c1: Finance stamped voucher VOU-1 but posted the actual on VOU-5"
    )


def test_a_wrong_accounting_date_and_amount_are_found() -> None:
    wrong = replace(COST, voucher_date=date(2026, 11, 1), accounting_currency_amount=D("801.00"))
    difference = only(reconcile(agreeing(actuals=(B1, B2, wrong, UNBILLED, REVERSAL))))
    assert difference.cause == (
        "actual c1: voucher date Dataverse 2026-11-01, Finance 2026-10-01; "
        "accounting amount Dataverse 801.00, Finance 800.00"
    )


def test_a_lost_cost_actual_is_found_with_the_bridges_reason() -> None:
    rows = tuple(r for r in agreeing().staging_rows if r.actual_id != "c1")
    lines = (journal_line(UNBILLED),)
    failed = BridgeRecord("c1", None, ACTUALS_MAP, "failed", "no line property", 1, STAGING_TOPIC)
    report = reconcile(agreeing(staging_rows=rows, journal_lines=lines, bridge_records=(failed,)))
    difference = only(report)
    assert difference.kind == "actual never reached staging"
    assert difference.actual_id == "c1" and difference.explained
    assert difference.cause == (
        "cost actual c1: failed in the bridge's error queue — no line property"
    )


def test_a_lost_cost_actual_the_bridge_never_saw_is_unexplained() -> None:
    rows = tuple(r for r in agreeing().staging_rows if r.actual_id != "c1")
    report = reconcile(agreeing(staging_rows=rows, journal_lines=(journal_line(UNBILLED),)))
    assert [(d.kind, d.actual_id, d.explained) for d in report.differences] == [
        ("actual never reached staging", "c1", False)
    ]


def test_a_lost_actual_of_an_invoice_with_filtered_rows_is_explained_by_the_counts() -> None:
    """A row the bridge filtered on arrival leaves no record; its invoice's counted rows
    explain an actual that never reached staging (and the skip-sync comparison names them)."""
    unbilled = replace(UNBILLED, invoice_id="inv-1")
    actuals = (B1, B2, COST, unbilled, REVERSAL)
    rows = tuple(r for r in agreeing().staging_rows if r.actual_id != "u1")
    filtered = (FilteredRows(ACTUALS_MAP, "actuals to staging", "inv-1", "skip sync", 2),)
    report = reconcile(
        agreeing(
            actuals=actuals,
            staging_rows=rows,
            journal_lines=(journal_line(COST),),
            filtered=filtered,
        )
    )
    difference = only(report)
    assert difference.kind == "actual never reached staging"
    assert difference.actual_id == "u1" and difference.explained
    assert difference.cause == (
        "unbilled_sales actual u1: no bridge record; of its invoice the bridge counted "
        f"2 source row(s) filtered by map '{ACTUALS_MAP}' — skip sync"
    )
    assert "the bridge counted 2 rows filtered by skip sync" in report.summary()


def test_a_staged_row_whose_amount_differs_from_its_actual_is_found() -> None:
    rows = (
        staged(B1),
        staged(B2),
        replace(staged(COST, "PJ-1"), amount=D("80.00")),
        staged(UNBILLED, "PJ-1"),
    )
    difference = only(reconcile(agreeing(staging_rows=rows)))
    assert difference.kind == "staged row differs from its actual"
    assert difference.cause == "cost actual c1: amount Dataverse 800.00, Finance staging 80.00"


def test_an_imported_row_without_its_journal_line_is_found() -> None:
    difference = only(reconcile(agreeing(journal_lines=(journal_line(UNBILLED),))))
    assert difference.kind == "imported row has no journal line" and difference.actual_id == "c1"


def test_a_journal_line_whose_quantity_differs_is_found() -> None:
    lines = (replace(journal_line(COST), quantity=D("6")), journal_line(UNBILLED))
    difference = only(reconcile(agreeing(journal_lines=lines)))
    assert difference.kind == "journal line differs from its actual"
    assert difference.cause == "cost actual c1: quantity Dataverse 8, journal PJ-1 6"


def test_a_skip_sync_actual_in_staging_is_found() -> None:
    rows = (*agreeing().staging_rows, staged(REVERSAL))
    difference = only(reconcile(agreeing(staging_rows=rows)))
    assert difference.kind == "skip-sync actual reached staging"
    assert difference.actual_id == "r1" and not difference.explained


def test_a_staged_row_with_no_dataverse_actual_is_found() -> None:
    ghost = replace(staged(COST, "PJ-1"), actual_id="g1", imported=False, journal_id=None)
    difference = only(reconcile(agreeing(staging_rows=(*agreeing().staging_rows, ghost))))
    assert difference.kind == "staged row with no Dataverse actual" and difference.actual_id == "g1"


def test_a_wrong_tax_is_found() -> None:
    wrong = replace(PROPOSAL, tax_amount=D("90.00"))
    kinds = {d.kind for d in reconcile(agreeing(proposals=(wrong,))).differences}
    assert "tax differs" in kinds


def test_a_posted_invoice_that_differs_from_its_proposal_is_found() -> None:
    wrong = replace(CUSTOMER_INVOICE, total_amount=D("2110.00"))
    difference = only(reconcile(agreeing(customer_invoices=(wrong,))))
    assert difference.kind == "customer invoice differs from its proposal"
    assert difference.cause == "total proposal 2100.00, customer invoice 2110.00"


def test_a_posted_proposal_without_customer_invoice_is_found() -> None:
    difference = only(reconcile(agreeing(customer_invoices=())))
    assert difference.kind == "posted proposal has no customer invoice"


def test_a_voucher_finance_never_posted_is_found() -> None:
    # Dataverse's c1 carries VOU-1, but Finance's row of c1 was never stamped.
    rows = (
        staged(B1),
        staged(B2),
        replace(staged(COST, "PJ-1"), voucher=None),
        staged(UNBILLED, "PJ-1"),
    )
    difference = only(reconcile(agreeing(staging_rows=rows)))
    assert difference.kind == "voucher in Dataverse that Finance never posted"
    assert difference.actual_id == "c1"


# --- explanations of causes --------------------------------------------------------------------


def test_missing_proposal_queued_behind_paused_map_is_explained() -> None:
    record = BridgeRecord("inv-1", "inv-1", PROPOSAL_MAP, "queued")
    report = reconcile(agreeing(proposals=(), customer_invoices=(), bridge_records=(record,)))
    difference = only(report)
    assert difference.kind == "confirmed invoice has no proposal"
    assert difference.cause == f"proposal header: queued: map '{PROPOSAL_MAP}' is paused"
    assert difference.explained and not report.agree


def test_missing_proposal_failed_carries_targets_reason() -> None:
    record = BridgeRecord("inv-1", "inv-1", PROPOSAL_MAP, "failed", "unknown legal entity XX")
    difference = only(reconcile(agreeing(proposals=(), bridge_records=(record,))))
    assert "failed" in difference.cause and "unknown legal entity XX" in difference.cause


def test_missing_proposal_the_bridge_never_saw_is_unexplained() -> None:
    report = reconcile(agreeing(proposals=()))
    assert [d.explained for d in report.differences] == [False]
    assert len(report.unexplained) == 1


def test_proposal_without_lines_gives_finances_waiting_reason() -> None:
    waiting = replace(
        PROPOSAL, lines=(), status="open", waiting_reason="project transaction not posted yet"
    )
    difference = only(reconcile(agreeing(proposals=(waiting,))))
    assert difference.cause == "waiting: project transaction not posted yet"
    assert difference.explained


def test_currency_difference_is_unexplained() -> None:
    wrong = replace(PROPOSAL, currency="EUR")
    kinds = {d.kind: d.explained for d in reconcile(agreeing(proposals=(wrong,))).differences}
    assert kinds["currency differs"] is False


def test_line_count_mismatch_is_reported() -> None:
    report = reconcile(agreeing(invoices=(replace(INVOICE, expected_billed_lines=3),)))
    assert only(report).kind == "line count differs"


def test_posted_invoice_whose_actuals_lack_accounting_names_the_pending_record() -> None:
    record = BridgeRecord("b2", "inv-1", ACTUALS_MAP, "pending", attempts=2)
    synced = BridgeRecord("b2", "inv-1", ACTUALS_MAP, "synced", target_topic=STAGING_TOPIC)
    back = replace(record, target_topic=ACCOUNTING_TOPIC)
    without = replace(B2, voucher=None, voucher_date=None, accounting_currency_amount=None)
    report = reconcile(
        agreeing(actuals=(B1, without, COST, UNBILLED, REVERSAL), bridge_records=(synced, back))
    )
    difference = only(report)
    assert difference.kind == "posted invoice's actuals lack accounting detail"
    assert difference.actual_id == "b2"
    assert "pending" in difference.cause and "attempt 2" in difference.cause


def test_proposal_not_posted_is_explained() -> None:
    open_one = replace(PROPOSAL, status="lines_imported", invoice_number=None)
    without = [replace(a, voucher=None) if a in (B1, B2) else a for a in agreeing().actuals]
    rows = [
        replace(r, voucher=None) if r.actual_id in ("b1", "b2") else r
        for r in agreeing().staging_rows
    ]
    report = reconcile(
        agreeing(
            proposals=(open_one,),
            customer_invoices=(),
            actuals=tuple(without),
            staging_rows=tuple(rows),
        )
    )
    difference = only(report)
    assert difference.kind == "proposal not posted" and difference.explained


def test_proposal_with_no_dataverse_origin_is_unexplained() -> None:
    difference = only(
        reconcile(agreeing(proposals=(PROPOSAL, replace(PROPOSAL, proposal_id="ghost", lines=()))))
    )
    assert difference.kind == "proposal with no Dataverse origin" and not difference.explained


def test_unimported_billed_row_of_a_proposal_with_lines_gives_its_reason() -> None:
    b3 = billed("b3", "1", "200.00", voucher=None)
    row = replace(staged(b3), imported=False, reason="no exchange rate for EUR→USD")
    report = reconcile(
        agreeing(actuals=(*agreeing().actuals, b3), staging_rows=(*agreeing().staging_rows, row))
    )
    kinds = {d.kind: d for d in report.differences}
    missing = kinds["billed actual has no proposal line"]
    assert missing.actual_id == "b3" and missing.explained
    assert missing.cause == "staged row not imported: no exchange rate for EUR→USD"


def test_unimported_cost_row_gives_finances_reason() -> None:
    rows = (
        staged(B1),
        staged(B2),
        replace(
            staged(COST),
            imported=False,
            reason="no exchange rate for EUR→USD on 2026-10-01",
            voucher=None,
        ),
        staged(UNBILLED, "PJ-1"),
    )
    without = replace(COST, voucher=None, voucher_date=None, accounting_currency_amount=None)
    report = reconcile(
        agreeing(
            staging_rows=rows,
            journal_lines=(journal_line(UNBILLED),),
            actuals=(B1, B2, without, UNBILLED, REVERSAL),
        )
    )
    difference = only(report)
    assert difference.kind == "staged row not imported" and difference.explained
    assert difference.cause == (
        "cost c1: staged row not imported: no exchange rate for EUR→USD on 2026-10-01"
    )


def test_a_staged_row_no_import_has_seen_yet_is_explained_as_such() -> None:
    rows = (
        staged(B1),
        staged(B2),
        replace(staged(COST), imported=False, voucher=None),
        staged(UNBILLED, "PJ-1"),
    )
    without = replace(COST, voucher=None, voucher_date=None, accounting_currency_amount=None)
    report = reconcile(
        agreeing(
            staging_rows=rows,
            journal_lines=(journal_line(UNBILLED),),
            actuals=(B1, B2, without, UNBILLED, REVERSAL),
        )
    )
    difference = only(report)
    assert difference.explained
    assert difference.cause == (
        "cost c1: staged row not imported: no import from staging has run on it yet"
    )


# --- scoped to one test's records ----------------------------------------------------------------


def test_a_scoped_reconciliation_ignores_another_tests_unfinished_invoice() -> None:
    # Another test's invoice, confirmed but not yet synced, with an actual not yet staged.
    other_invoice = replace(INVOICE, invoice_id="inv-2")
    other_cost = replace(COST, actual_id="c2", voucher=None)
    shared = agreeing(
        invoices=(INVOICE, other_invoice), actuals=(B1, B2, COST, UNBILLED, REVERSAL, other_cost)
    )
    assert {d.invoice_id for d in reconcile(shared).differences} >= {"inv-2"}
    mine = scoped(shared, ["inv-1"], ["b1", "b2", "c1", "u1", "r1"])
    report = reconcile(mine)
    assert report.agree, report.differences
    assert report.count(BILLED_LINES) == 2 and report.count(STAGED) == 2


def test_a_scoped_reconciliation_still_finds_a_difference_of_its_own() -> None:
    wrong = replace(PROPOSAL, lines=(replace(line(B1), amount=D("1500.00")), line(B2)))
    mine = scoped(agreeing(proposals=(wrong,)), ["inv-1"], ["b1", "b2", "c1", "u1", "r1"])
    kinds = {d.kind for d in reconcile(mine).differences}
    assert "proposal line differs from its billed actual" in kinds
