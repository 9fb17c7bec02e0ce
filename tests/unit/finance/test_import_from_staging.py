"""Import from staging: journals for cost and unbilled sales, all-or-none proposal lines."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from schemas.vocabulary import BillingMethod, BillingType, TransactionClass, TransactionType
from services.finance.domain import (
    AccountingStamp,
    ContractFixedRate,
    ExchangeRate,
    ImportSettings,
    LegalEntitySetup,
    PeriodUnit,
    ProposalHeader,
    ProposalStatus,
    StagingRow,
    billed_still_arriving,
    fiscal_year,
    plan_import_from_staging,
    with_lines_imported,
)

USPM = LegalEntitySetup(
    "USPM",
    "USD",
    exchange_rates=(ExchangeRate("EUR", "USD", date(2026, 11, 2), Decimal("1.1000")),),
    fiscal_periods=fiscal_year(2026),
)
SETUPS = {"USPM": USPM}


def _fixed(currency: str, rate: str, contract_id: str = "C1") -> ContractFixedRate:
    return ContractFixedRate(contract_id, "USPM", currency, "USD", Decimal(rate))


def _row(actual_id: str, **changes: Any) -> StagingRow:
    values: dict[str, Any] = {
        "actual_id": actual_id,
        "legal_entity": "USPM",
        "transaction_type": TransactionType.COST,
        "transaction_class": TransactionClass.TIME,
        "billing_type": BillingType.CHARGEABLE,
        "billing_method": BillingMethod.TIME_AND_MATERIAL,
        "quantity": Decimal("8"),
        "amount": Decimal("800.00"),
        "currency": "USD",
        "accounting_date": date(2026, 11, 2),
        "project_id": "P1",
        "contract_id": "C1",
        "contract_line_id": "CL1",
        "customer_id": "CUST1",
    }
    values.update(changes)
    return StagingRow(**values)


def _posted(row: StagingRow, rate: str = "1") -> StagingRow:
    """The row as it looks after its integration journal was posted."""
    stamp = AccountingStamp(
        row.actual_id, "VOU-000001", row.accounting_date, Decimal(rate), row.amount
    )
    return replace(row, imported=True, accounting=stamp)


def _unbilled(actual_id: str, **changes: Any) -> StagingRow:
    values: dict[str, Any] = {
        "transaction_type": TransactionType.UNBILLED_SALES,
        "amount": Decimal("1600.00"),
    }
    values.update(changes)
    return _row(actual_id, **values)


def _billed(actual_id: str, unbilled_id: str | None, **changes: Any) -> StagingRow:
    values: dict[str, Any] = {
        "transaction_type": TransactionType.BILLED_SALES,
        "amount": Decimal("1600.00"),
        "invoice_id": "INV-1",
        "unbilled_actual_id": unbilled_id,
    }
    values.update(changes)
    return _row(actual_id, **values)


def _milestone(actual_id: str, **changes: Any) -> StagingRow:
    values: dict[str, Any] = {
        "transaction_class": TransactionClass.MILESTONE,
        "billing_method": BillingMethod.FIXED_PRICE,
        "quantity": Decimal("1"),
        "amount": Decimal("5000.00"),
    }
    values.update(changes)
    return _billed(actual_id, None, **values)


def _header(expected: int, **changes: Any) -> ProposalHeader:
    values: dict[str, Any] = {
        "proposal_id": "INV-1",
        "legal_entity": "USPM",
        "customer_id": "CUST1",
        "contract_id": "C1",
        "currency": "USD",
        "expected_billed_lines": expected,
    }
    values.update(changes)
    return ProposalHeader(**values)


# --- integration journals ---------------------------------------------------------------------


def test_cost_and_unbilled_rows_become_one_journal_line_each() -> None:
    rows = [_row("A1"), _unbilled("A2"), _unbilled("A3", billing_type=BillingType.NON_CHARGEABLE)]
    plan = plan_import_from_staging(rows, [], SETUPS)

    assert len(plan.journals) == 1
    journal = plan.journals[0]
    assert journal.legal_entity == "USPM"
    assert journal.period_start == date(2026, 11, 1)
    assert [(line.line_number, line.actual_id) for line in journal.lines] == [
        (1, "A1"),
        (2, "A2"),
        (3, "A3"),
    ]
    assert [line.line_property for line in journal.lines] == [
        "Chargeable",
        "Chargeable",
        "NonChargeable",
    ]
    assert journal.lines[1].amount == Decimal("1600.00")
    assert journal.lines[1].exchange_rate == Decimal(1)
    assert plan.imported_actual_ids == {"A1", "A2", "A3"}
    assert plan.row_reasons == {}


def test_journals_split_by_period_unit_and_legal_entity() -> None:
    setups = {**SETUPS, "DEPM": LegalEntitySetup("DEPM", "EUR")}
    rows = [
        _row("A1", accounting_date=date(2026, 11, 2)),  # Monday
        _row("A2", accounting_date=date(2026, 11, 8)),  # Sunday, same ISO week
        _row("A3", accounting_date=date(2026, 11, 9)),  # next week
        _row("A4", legal_entity="DEPM", currency="EUR"),
    ]
    weekly = plan_import_from_staging(rows, [], setups, ImportSettings(PeriodUnit.WEEK))
    assert [
        (j.legal_entity, j.period_start, [x.actual_id for x in j.lines]) for j in weekly.journals
    ] == [
        ("DEPM", date(2026, 11, 2), ["A4"]),
        ("USPM", date(2026, 11, 2), ["A1", "A2"]),
        ("USPM", date(2026, 11, 9), ["A3"]),
    ]
    daily = plan_import_from_staging(rows, [], setups, ImportSettings(PeriodUnit.DAY))
    assert len(daily.journals) == 4
    monthly = plan_import_from_staging(rows, [], setups, ImportSettings(PeriodUnit.MONTH))
    assert [len(j.lines) for j in monthly.journals] == [1, 3]


def test_journal_holds_at_most_the_configured_number_of_lines() -> None:
    rows = [_row(f"A{n:02d}") for n in range(1, 6)]
    plan = plan_import_from_staging(rows, [], SETUPS, ImportSettings(max_lines_per_journal=2))
    assert [[line.actual_id for line in j.lines] for j in plan.journals] == [
        ["A01", "A02"],
        ["A03", "A04"],
        ["A05"],
    ]
    assert [line.line_number for line in plan.journals[2].lines] == [1]


def test_default_journal_size_is_200() -> None:
    rows = [_row(f"A{n:03d}") for n in range(201)]
    plan = plan_import_from_staging(rows, [], SETUPS)
    assert [len(j.lines) for j in plan.journals] == [200, 1]


def test_rows_already_imported_are_never_imported_twice() -> None:
    rows = [replace(_row("A1"), imported=True), _row("A2"), _posted(_unbilled("U1"))]
    plan = plan_import_from_staging(rows, [], SETUPS)
    assert plan.imported_actual_ids == {"A2"}


def test_row_without_exchange_rate_stays_unimported_with_reason() -> None:
    rows = [_row("A1", currency="EUR", accounting_date=date(2026, 11, 1)), _row("A2")]
    plan = plan_import_from_staging(rows, [], SETUPS)
    assert plan.imported_actual_ids == {"A2"}
    assert plan.row_reasons == {"A1": "no exchange rate for EUR→USD on 2026-11-01"}


def test_journal_line_takes_the_rate_on_its_date_or_the_contract_fixed_rate() -> None:
    rows = [_row("A1", currency="EUR", amount=Decimal("100.00"))]
    plan = plan_import_from_staging(rows, [], SETUPS)
    assert plan.journals[0].lines[0].exchange_rate == Decimal("1.1000")

    early = [_row("A1", currency="EUR", accounting_date=date(2026, 10, 1))]
    fixed = plan_import_from_staging(
        early, [], SETUPS, fixed_contract_rates={"C1": _fixed("EUR", "1.05")}
    )
    assert fixed.journals[0].lines[0].exchange_rate == Decimal("1.05")
    assert fixed.row_reasons == {}


def test_row_with_setup_gap_is_kept_with_the_setup_reason() -> None:
    setups = {"USPM": replace(USPM, line_properties={BillingType.CHARGEABLE: "Chargeable"})}
    rows = [_row("A1", billing_type=BillingType.COMPLIMENTARY), _row("A2", legal_entity="XXPM")]
    plan = plan_import_from_staging(rows, [], setups)
    assert plan.journals == ()
    assert plan.row_reasons == {
        "A1": "no line property mapped for billing type complimentary in legal entity USPM",
        "A2": "unknown legal entity XXPM on actual A2",
    }


# --- proposal lines: all or none --------------------------------------------------------------


def test_all_billed_lines_staged_and_unbilled_posted_makes_every_line() -> None:
    rows = [
        _posted(_unbilled("U1")),
        _posted(_unbilled("U2", billing_type=BillingType.NON_CHARGEABLE, amount=Decimal("400.00"))),
        _billed("B1", "U1", quantity=Decimal("6"), amount=Decimal("1200.00")),
        _billed(
            "B2",
            "U2",
            quantity=Decimal("2"),
            amount=Decimal("400.00"),
            billing_type=BillingType.NON_CHARGEABLE,
        ),
    ]
    plan = plan_import_from_staging(rows, [_header(2)], SETUPS)

    lines = plan.proposal_lines["INV-1"]
    assert [(x.line_number, x.actual_id, x.line_property, x.amount) for x in lines] == [
        (1, "B1", "Chargeable", Decimal("1200.00")),
        (2, "B2", "NonChargeable", Decimal("400.00")),
    ]
    # Only the chargeable unbilled actual was accrued as WIP, so only its line reverses WIP.
    assert [x.accrued_wip_rate for x in lines] == [Decimal("1"), None]
    assert plan.waiting == {}
    assert plan.imported_actual_ids == {"B1", "B2"}


def test_fewer_billed_lines_than_expected_makes_none_and_waits() -> None:
    rows = [_posted(_unbilled("U1")), _billed("B1", "U1")]
    plan = plan_import_from_staging(rows, [_header(3)], SETUPS)
    assert plan.proposal_lines == {}
    assert plan.waiting == {"INV-1": "waiting for 2 of 3 billed sales actuals"}
    assert plan.imported_actual_ids == frozenset()


@pytest.mark.parametrize("staged", [0, 1, 2])
def test_counting_billed_rows_still_arriving_gives_the_plans_reason(staged: int) -> None:
    """The import's shortcut (count, do not read) waits with what the full plan would say."""
    rows = [_milestone(f"B{n}") for n in range(staged)]
    plan = plan_import_from_staging(rows, [_header(3)], SETUPS)
    assert billed_still_arriving(staged, _header(3)) == plan.waiting["INV-1"]


@pytest.mark.parametrize("staged", [3, 4])
def test_complete_or_surplus_billed_rows_are_planned_not_counted(staged: int) -> None:
    assert billed_still_arriving(staged, _header(3)) is None


def test_header_without_any_staged_line_waits_for_all() -> None:
    plan = plan_import_from_staging([], [_header(2)], SETUPS)
    assert plan.waiting == {"INV-1": "waiting for 2 of 2 billed sales actuals"}


def test_more_billed_lines_than_expected_is_a_mismatch() -> None:
    rows = [_milestone("B1"), _milestone("B2"), _milestone("B3")]
    plan = plan_import_from_staging(rows, [_header(2)], SETUPS)
    assert plan.proposal_lines == {}
    assert plan.waiting == {"INV-1": "mismatched billed sales actuals: 3 staged for 2 expected"}


def test_time_and_material_waits_until_unbilled_sales_are_posted_through_the_journal() -> None:
    unposted = _unbilled("U1")
    rows = [unposted, _billed("B1", "U1")]
    plan = plan_import_from_staging(rows, [_header(1)], SETUPS)

    assert plan.proposal_lines == {}
    assert plan.waiting == {
        "INV-1": "project transaction not posted yet: unbilled actual U1 of billed actual B1 "
        "is not posted through the integration journal"
    }
    # The same run puts the unbilled actual into a journal; the proposal waits for its posting.
    assert plan.imported_actual_ids == {"U1"}

    # Imported but not posted still waits.
    again = plan_import_from_staging(
        [replace(unposted, imported=True), rows[1]], [_header(1)], SETUPS
    )
    assert "INV-1" in again.waiting

    # Once the journal is posted, the next run makes the line.
    done = plan_import_from_staging([_posted(unposted), rows[1]], [_header(1)], SETUPS)
    assert [x.actual_id for x in done.proposal_lines["INV-1"]] == ["B1"]


def test_time_and_material_waits_when_unbilled_actual_never_reached_staging() -> None:
    plan = plan_import_from_staging([_billed("B1", "U9")], [_header(1)], SETUPS)
    assert plan.waiting == {
        "INV-1": "project transaction not posted yet: unbilled actual U9 of billed actual B1 "
        "is not in staging"
    }


def test_milestone_and_fee_lines_need_no_journal() -> None:
    rows = [_milestone("B1"), _billed("B2", None, transaction_class=TransactionClass.FEE)]
    plan = plan_import_from_staging(rows, [_header(2)], SETUPS)
    lines = plan.proposal_lines["INV-1"]
    assert [(x.actual_id, x.accrued_wip_rate) for x in lines] == [("B1", None), ("B2", None)]


def test_one_row_without_exchange_rate_blocks_the_whole_proposal() -> None:
    rows = [
        _milestone("B1", currency="EUR", accounting_date=date(2026, 11, 1)),
        _milestone("B2", currency="EUR", accounting_date=date(2026, 11, 5)),
    ]
    plan = plan_import_from_staging(rows, [_header(2, currency="EUR")], SETUPS)
    assert plan.proposal_lines == {}
    assert plan.waiting == {"INV-1": "no exchange rate for EUR→USD on 2026-11-01"}
    assert plan.row_reasons == {"B1": "no exchange rate for EUR→USD on 2026-11-01"}


def test_fixed_contract_rate_unblocks_the_proposal() -> None:
    rows = [_milestone("B1", currency="EUR", accounting_date=date(2026, 11, 1))]
    plan = plan_import_from_staging(
        rows,
        [_header(1, currency="EUR")],
        SETUPS,
        fixed_contract_rates={"C1": _fixed("EUR", "1.07")},
    )
    assert [x.actual_id for x in plan.proposal_lines["INV-1"]] == ["B1"]


def test_billed_row_without_header_waits_for_the_header() -> None:
    plan = plan_import_from_staging([_milestone("B1")], [], SETUPS)
    assert plan.proposal_lines == {}
    assert plan.row_reasons == {"B1": "no proposal header INV-1 received yet"}


def test_billed_row_in_another_currency_than_the_proposal_blocks_it() -> None:
    rows = [_milestone("B1", currency="EUR")]
    plan = plan_import_from_staging(rows, [_header(1)], SETUPS)
    assert plan.waiting == {"INV-1": "currency EUR of actual B1 differs from proposal INV-1's USD"}


def test_proposal_with_lines_is_never_imported_again() -> None:
    header = with_lines_imported(_header(1))
    assert header.status is ProposalStatus.LINES_IMPORTED
    rows = [replace(_milestone("B1"), imported=True), _milestone("B2")]
    plan = plan_import_from_staging(rows, [header], SETUPS)
    assert plan.proposal_lines == {}
    assert plan.waiting == {}
    assert plan.row_reasons == {"B2": "proposal INV-1 is lines_imported: its lines are complete"}


def test_lines_imported_only_once() -> None:
    with pytest.raises(Exception, match="INV-1 is lines_imported: lines are imported only once"):
        with_lines_imported(with_lines_imported(_header(1)))


def test_corrective_credit_line_needs_no_journal_and_moves_no_wip() -> None:
    # The billed reversal gives quantity back to WIP through a new unbilled actual, which the
    # journal posts; the credit line itself must not wait for, or reverse, any accrual.
    rows = [
        _billed(
            "B1R",
            "U1",
            quantity=Decimal("-8"),
            amount=Decimal("-1600.00"),
            invoice_id="INV-2",
            reverses_actual_id="B1",
        ),
    ]
    plan = plan_import_from_staging(rows, [_header(1, proposal_id="INV-2")], SETUPS)
    (line,) = plan.proposal_lines["INV-2"]
    assert (line.actual_id, line.amount, line.accrued_wip_rate) == (
        "B1R",
        Decimal("-1600.00"),
        None,
    )


def test_negative_time_and_material_line_that_is_not_a_reversal_reverses_its_wip() -> None:
    rows = [
        _posted(_unbilled("U1", quantity=Decimal("-1"), amount=Decimal("-50.00")), rate="1.1"),
        _billed("B1", "U1", quantity=Decimal("-1"), amount=Decimal("-50.00")),
    ]
    plan = plan_import_from_staging(rows, [_header(1)], SETUPS)
    (line,) = plan.proposal_lines["INV-1"]
    assert line.accrued_wip_rate == Decimal("1.1")


# --- unbilled link absent: matched by contract line, class, billing type, quantity, amount ----


def test_billed_row_without_link_matches_its_posted_unbilled_actual() -> None:
    rows = [
        _posted(_unbilled("U1", quantity=Decimal("6"), amount=Decimal("1200.00")), rate="1.1"),
        _posted(_unbilled("U2", contract_line_id="CL2")),  # another contract line
        _billed("B1", None, quantity=Decimal("6"), amount=Decimal("1200.00")),
    ]
    plan = plan_import_from_staging(rows, [_header(1)], SETUPS)
    (line,) = plan.proposal_lines["INV-1"]
    assert (line.actual_id, line.accrued_wip_rate) == ("B1", Decimal("1.1"))


def test_billed_row_without_link_waits_while_an_identical_unbilled_actual_is_unposted() -> None:
    rows = [
        _posted(_unbilled("U1")),
        _unbilled("U5"),  # same contract line, quantity and amount, not yet journal-posted
        _billed("B1", None),
    ]
    plan = plan_import_from_staging(rows, [_header(1)], SETUPS)
    assert plan.waiting == {
        "INV-1": "project transaction not posted yet: unbilled actual U5 of billed actual B1 "
        "is not posted through the integration journal"
    }


def test_billed_row_without_link_and_without_match_waits() -> None:
    rows = [_posted(_unbilled("U1", amount=Decimal("1500.00"))), _billed("B1", None)]
    plan = plan_import_from_staging(rows, [_header(1)], SETUPS)
    assert plan.waiting == {
        "INV-1": "project transaction not posted yet: unbilled actual (matched by contract line, "
        "quantity and amount) of billed actual B1 is not in staging"
    }


def test_billing_method_absent_is_read_as_time_and_material() -> None:
    rows = [_unbilled("U1"), _billed("B1", "U1", billing_method=None)]
    plan = plan_import_from_staging(rows, [_header(1)], SETUPS)
    assert plan.waiting["INV-1"].startswith("project transaction not posted yet")
