"""Posting integration journals and proposals: balanced vouchers, stamps, closed periods."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from schemas.vocabulary import BillingMethod, BillingType, TransactionClass, TransactionType
from services.finance.domain import (
    ACCOUNT_ACCRUED_COST,
    ACCOUNT_ACCRUED_REVENUE,
    ACCOUNT_RECEIVABLE,
    ACCOUNT_REVENUE,
    ACCOUNT_SALES_TAX_PAYABLE,
    ACCOUNT_WIP_COST,
    ACCOUNT_WIP_SALES_VALUE,
    AlreadyPosted,
    ClosedPeriodError,
    ContractFixedRate,
    ExchangeRate,
    IntegrationJournal,
    LedgerEntry,
    LegalEntitySetup,
    MissingExchangeRate,
    PostedJournal,
    ProposalHeader,
    ProposalLine,
    ProposalNotReady,
    ProposalStatus,
    StagingRow,
    UnbalancedVoucher,
    Voucher,
    distribute_tax,
    fiscal_year,
    plan_import_from_staging,
    post_integration_journal,
    post_proposal,
    proposal_totals,
    with_lines_imported,
)

USPM = LegalEntitySetup(
    "USPM",
    "USD",
    exchange_rates=(
        ExchangeRate("EUR", "USD", date(2026, 9, 1), Decimal("1.0500")),
        ExchangeRate("EUR", "USD", date(2026, 11, 2), Decimal("1.1000")),
        ExchangeRate("EUR", "USD", date(2026, 11, 15), Decimal("1.1200")),
    ),
    fiscal_periods=fiscal_year(2026, closed_months=[10]),
)
SETUPS = {"USPM": USPM}


def _row(actual_id: str, **changes: Any) -> StagingRow:
    values: dict[str, Any] = {
        "actual_id": actual_id,
        "legal_entity": "USPM",
        "transaction_type": TransactionType.UNBILLED_SALES,
        "transaction_class": TransactionClass.TIME,
        "billing_type": BillingType.CHARGEABLE,
        "billing_method": BillingMethod.TIME_AND_MATERIAL,
        "quantity": Decimal("8"),
        "amount": Decimal("1600.00"),
        "currency": "EUR",
        "accounting_date": date(2026, 11, 2),
        "project_id": "P1",
        "contract_id": "C1",
        "contract_line_id": "CL1",
        "customer_id": "CUST1",
    }
    values.update(changes)
    return StagingRow(**values)


def _header(expected: int, **changes: Any) -> ProposalHeader:
    values: dict[str, Any] = {
        "proposal_id": "INV-1",
        "legal_entity": "USPM",
        "customer_id": "CUST1",
        "contract_id": "C1",
        "currency": "EUR",
        "expected_billed_lines": expected,
        "tax_amount": Decimal("320.00"),
    }
    values.update(changes)
    return ProposalHeader(**values)


def _journal(rows: list[StagingRow], setup: LegalEntitySetup = USPM) -> IntegrationJournal:
    # One journal holding every planned line, whatever period the import grouped them by.
    plan = plan_import_from_staging(rows, [], {"USPM": setup})
    lines = tuple(line for planned in plan.journals for line in planned.lines)
    return IntegrationJournal("PJ-000001", "USPM", lines)


def _post_journal(rows: list[StagingRow], setup: LegalEntitySetup = USPM) -> PostedJournal:
    journal = _journal(rows, setup)
    numbers = [f"VOU-{n:06d}" for n in range(1, len(journal.lines) + 1)]
    return post_integration_journal(journal, setup, numbers)


def _apply(rows: list[StagingRow], posted: PostedJournal) -> list[StagingRow]:
    """What the caller stores: rows imported and stamped with their accounting detail."""
    stamps = {stamp.actual_id: stamp for stamp in posted.stamps}
    return [
        replace(row, imported=True, accounting=stamps[row.actual_id])
        if row.actual_id in stamps
        else row
        for row in rows
    ]


def _proposal(
    rows: list[StagingRow], header: ProposalHeader
) -> tuple[ProposalHeader, tuple[ProposalLine, ...]]:
    plan = plan_import_from_staging(rows, [header], SETUPS)
    assert plan.waiting == {}, plan.waiting
    return with_lines_imported(header), plan.proposal_lines[header.proposal_id]


def _entries(voucher: Voucher) -> list[tuple[str, Decimal]]:
    return [(e.account, e.amount) for e in voucher.entries]


# --- integration journal ----------------------------------------------------------------------


def test_journal_posting_makes_one_balanced_voucher_per_line_in_accounting_currency() -> None:
    rows = [
        _row("A1", transaction_type=TransactionType.COST, amount=Decimal("800.00")),
        _row("U1"),
        _row("U2", billing_type=BillingType.NON_CHARGEABLE, amount=Decimal("400.00")),
    ]
    posted = _post_journal(rows)

    assert posted.journal.posted is True
    cost, sales, non_chargeable = posted.vouchers
    assert _entries(cost) == [
        (ACCOUNT_WIP_COST, Decimal("880.00")),
        (ACCOUNT_ACCRUED_COST, Decimal("-880.00")),
    ]
    assert _entries(sales) == [
        (ACCOUNT_WIP_SALES_VALUE, Decimal("1760.00")),
        (ACCOUNT_ACCRUED_REVENUE, Decimal("-1760.00")),
    ]
    # Non-chargeable unbilled sales accrue no revenue, yet the row is posted.
    assert non_chargeable.entries == ()
    assert all(v.balance == 0 for v in posted.vouchers)
    assert [(v.voucher, v.accounting_date, v.currency) for v in posted.vouchers] == [
        ("VOU-000001", date(2026, 11, 2), "USD"),
        ("VOU-000002", date(2026, 11, 2), "USD"),
        ("VOU-000003", date(2026, 11, 2), "USD"),
    ]
    assert [
        (s.actual_id, s.voucher, s.exchange_rate, s.accounting_currency_amount)
        for s in posted.stamps
    ] == [
        ("A1", "VOU-000001", Decimal("1.1000"), Decimal("880.00")),
        ("U1", "VOU-000002", Decimal("1.1000"), Decimal("1760.00")),
        ("U2", "VOU-000003", Decimal("1.1000"), Decimal("440.00")),
    ]


def test_journal_posted_twice_is_refused() -> None:
    posted = _post_journal([_row("U1")])
    with pytest.raises(AlreadyPosted, match="integration journal PJ-000001 is already posted"):
        post_integration_journal(posted.journal, USPM, ["VOU-000009"])


def test_journal_in_closed_period_is_refused_and_nothing_posts() -> None:
    rows = [_row("U1"), _row("U2", accounting_date=date(2026, 10, 30))]
    journal = _journal(rows)
    with pytest.raises(ClosedPeriodError, match="fiscal period 2026-10 is closed"):
        post_integration_journal(journal, USPM, ["VOU-000001", "VOU-000002"])


def test_journal_in_closed_period_moves_to_next_open_period_when_switched_on() -> None:
    setup = replace(USPM, move_to_next_open_period=True)
    posted = _post_journal([_row("U1", accounting_date=date(2026, 10, 30))], setup)
    (voucher,) = posted.vouchers
    assert voucher.accounting_date == date(2026, 11, 1)
    assert posted.stamps[0].voucher_date == date(2026, 11, 1)
    # The rate stays the one of the transaction date, checked at import.
    assert posted.stamps[0].exchange_rate == Decimal("1.0500")
    assert posted.stamps[0].accounting_currency_amount == Decimal("1680.00")


# --- proposal ---------------------------------------------------------------------------------


def _time_and_material_invoice() -> tuple[
    ProposalHeader, tuple[ProposalLine, ...], list[StagingRow]
]:
    """8 h approved, invoiced 6 h chargeable (1,200) + 2 h non-chargeable (400), tax 240."""
    unbilled = [
        _row("U1", quantity=Decimal("6"), amount=Decimal("1200.00")),
        _row(
            "U2",
            quantity=Decimal("2"),
            amount=Decimal("400.00"),
            billing_type=BillingType.NON_CHARGEABLE,
        ),
    ]
    rows = _apply(unbilled, _post_journal(unbilled))
    rows += [
        _row(
            "B1",
            transaction_type=TransactionType.BILLED_SALES,
            quantity=Decimal("6"),
            amount=Decimal("1200.00"),
            invoice_id="INV-1",
            unbilled_actual_id="U1",
        ),
        _row(
            "B2",
            transaction_type=TransactionType.BILLED_SALES,
            billing_type=BillingType.NON_CHARGEABLE,
            quantity=Decimal("2"),
            amount=Decimal("400.00"),
            invoice_id="INV-1",
            unbilled_actual_id="U2",
        ),
    ]
    header, lines = _proposal(rows, _header(2, tax_amount=Decimal("240.00")))
    return header, lines, rows


def test_posting_time_and_material_proposal_reverses_wip_and_books_revenue() -> None:
    header, lines, _ = _time_and_material_invoice()
    posted = post_proposal(header, lines, USPM, date(2026, 11, 20), "CIV-000001", "VOU-000010")

    voucher = posted.voucher
    assert voucher.balance == 0
    assert voucher.accounting_date == date(2026, 11, 20)
    assert _entries(voucher) == [
        (ACCOUNT_RECEIVABLE, Decimal("1612.80")),  # (1,200 + 240) x 1.12
        (ACCOUNT_REVENUE, Decimal("-1344.00")),  # 1,200 x 1.12
        # WIP reversed at the rate it was accrued at (1.10), not the invoice rate.
        (ACCOUNT_ACCRUED_REVENUE, Decimal("1320.00")),
        (ACCOUNT_WIP_SALES_VALUE, Decimal("-1320.00")),
        (ACCOUNT_SALES_TAX_PAYABLE, Decimal("-268.80")),
    ]


def test_posted_invoice_equals_its_proposal() -> None:
    header, lines, _ = _time_and_material_invoice()
    posted = post_proposal(header, lines, USPM, date(2026, 11, 20), "CIV-000001", "VOU-000010")

    invoice = posted.invoice
    totals = proposal_totals(header, lines)
    assert (invoice.net_amount, invoice.tax_amount, invoice.total_amount) == (
        Decimal("1200.00"),
        Decimal("240.00"),
        Decimal("1440.00"),
    )
    assert (invoice.net_amount, invoice.total_amount) == (totals.net_amount, totals.total_amount)
    assert invoice.currency == header.currency == "EUR"
    assert (invoice.invoice_number, invoice.voucher, invoice.proposal_id) == (
        "CIV-000001",
        "VOU-000010",
        "INV-1",
    )
    assert (invoice.exchange_rate, invoice.total_accounting_amount) == (
        Decimal("1.1200"),
        Decimal("1612.80"),
    )
    assert posted.header.status is ProposalStatus.POSTED
    assert posted.header.invoice_number == "CIV-000001"


def test_posting_stamps_each_billed_row_with_its_accounting_detail() -> None:
    header, lines, _ = _time_and_material_invoice()
    posted = post_proposal(header, lines, USPM, date(2026, 11, 20), "CIV-000001", "VOU-000010")
    assert [
        (
            s.actual_id,
            s.voucher,
            s.voucher_date,
            s.exchange_rate,
            s.accounting_currency_amount,
            s.tax_amount,
        )
        for s in posted.stamps
    ] == [
        (
            "B1",
            "VOU-000010",
            date(2026, 11, 20),
            Decimal("1.1200"),
            Decimal("1344.00"),
            Decimal("240.00"),
        ),
        (
            "B2",
            "VOU-000010",
            date(2026, 11, 20),
            Decimal("1.1200"),
            Decimal("448.00"),
            Decimal("0.00"),
        ),
    ]


def test_milestone_proposal_books_straight_revenue_with_fixed_contract_rate() -> None:
    milestone = _row(
        "B1",
        transaction_type=TransactionType.BILLED_SALES,
        transaction_class=TransactionClass.MILESTONE,
        billing_method=BillingMethod.FIXED_PRICE,
        quantity=Decimal("1"),
        amount=Decimal("5000.00"),
        invoice_id="INV-1",
    )
    header, lines = _proposal([milestone], _header(1, tax_amount=Decimal("1000.00")))
    posted = post_proposal(
        header,
        lines,
        USPM,
        date(2026, 11, 20),
        "CIV-000002",
        "VOU-000011",
        fixed_contract_rates={
            "C1": ContractFixedRate("C1", "USPM", "EUR", "USD", Decimal("1.0000"))
        },
    )
    assert _entries(posted.voucher) == [
        (ACCOUNT_RECEIVABLE, Decimal("6000.00")),
        (ACCOUNT_REVENUE, Decimal("-5000.00")),
        (ACCOUNT_SALES_TAX_PAYABLE, Decimal("-1000.00")),
    ]
    assert posted.voucher.balance == 0
    assert posted.invoice.exchange_rate == Decimal("1.0000")


def test_corrective_credit_produces_the_mirror_entries() -> None:
    header, lines, rows = _time_and_material_invoice()
    post_proposal(header, lines, USPM, date(2026, 11, 20), "CIV-000001", "VOU-000010")

    # Correcting the invoice to 0 h: the billed chargeable actual is reversed.
    reversal = replace(
        next(r for r in rows if r.actual_id == "B1"),
        actual_id="B1R",
        quantity=Decimal("-6"),
        amount=Decimal("-1200.00"),
        invoice_id="INV-2",
        reverses_actual_id="B1",
    )
    credit_header, credit_lines = _proposal(
        [*rows, reversal], _header(1, proposal_id="INV-2", tax_amount=Decimal("-240.00"))
    )
    credit = post_proposal(
        credit_header, credit_lines, USPM, date(2026, 11, 20), "CIV-000002", "VOU-000011"
    )
    # Mirror of the invoice's receivable, revenue and tax. WIP does not move: the quantity given
    # back returns to WIP through a new unbilled actual that the integration journal posts.
    assert _entries(credit.voucher) == [
        (ACCOUNT_RECEIVABLE, Decimal("-1612.80")),
        (ACCOUNT_REVENUE, Decimal("1344.00")),
        (ACCOUNT_SALES_TAX_PAYABLE, Decimal("268.80")),
    ]
    assert credit.voucher.balance == 0
    assert credit.invoice.total_amount == Decimal("-1440.00")
    assert credit.stamps[0].tax_amount == Decimal("-240.00")


def test_tax_is_distributed_proportionally_with_the_remainder_on_the_last_line() -> None:
    rows = [
        _row(
            f"B{n}",
            transaction_type=TransactionType.BILLED_SALES,
            transaction_class=TransactionClass.FEE,
            amount=Decimal("100.00"),
            invoice_id="INV-1",
        )
        for n in (1, 2, 3)
    ]
    header, lines = _proposal(rows, _header(3, tax_amount=Decimal("10.00")))
    assert distribute_tax(header.tax_amount, lines) == {
        "B1": Decimal("3.33"),
        "B2": Decimal("3.33"),
        "B3": Decimal("3.34"),
    }
    posted = post_proposal(header, lines, USPM, date(2026, 11, 20), "CIV-000003", "VOU-000012")
    assert sum(s.tax_amount for s in posted.stamps) == Decimal("10.00")
    # 300 x 1.12 = 336.00, 10 x 1.12 = 11.20.
    assert posted.voucher.total(ACCOUNT_RECEIVABLE) == Decimal("347.20")
    assert posted.voucher.balance == 0


def test_rounding_in_conversion_still_balances() -> None:
    rows = [
        _row(
            f"B{n}",
            transaction_type=TransactionType.BILLED_SALES,
            transaction_class=TransactionClass.FEE,
            amount=Decimal("0.05"),
            invoice_id="INV-1",
        )
        for n in (1, 2, 3)
    ]
    header, lines = _proposal(rows, _header(3, tax_amount=Decimal("0.01")))
    setup = replace(
        USPM, exchange_rates=(ExchangeRate("EUR", "USD", date(2026, 1, 1), Decimal("1.5")),)
    )
    posted = post_proposal(header, lines, setup, date(2026, 11, 20), "CIV-000004", "VOU-000013")
    # Each 0.05 x 1.5 = 0.075 → 0.08; the receivable is what was credited, not 0.15 x 1.5.
    assert posted.voucher.total(ACCOUNT_REVENUE) == Decimal("-0.24")
    assert posted.voucher.total(ACCOUNT_RECEIVABLE) == Decimal("0.26")
    assert posted.voucher.balance == 0


def test_proposal_without_lines_is_refused_with_its_waiting_reason() -> None:
    header = _header(2, waiting_reason="waiting for 1 of 2 billed sales actuals")
    with pytest.raises(
        ProposalNotReady,
        match="proposal INV-1 has no lines: waiting reason: waiting for 1 of 2 billed sales",
    ):
        post_proposal(header, [], USPM, date(2026, 11, 20), "CIV-000001", "VOU-000001")


def test_proposal_posted_twice_is_refused() -> None:
    header, lines, _ = _time_and_material_invoice()
    posted = post_proposal(header, lines, USPM, date(2026, 11, 20), "CIV-000001", "VOU-000010")
    with pytest.raises(
        AlreadyPosted, match="proposal INV-1 is already posted as invoice CIV-000001"
    ):
        post_proposal(posted.header, lines, USPM, date(2026, 11, 20), "CIV-000002", "VOU-000011")


def test_proposal_in_closed_period_is_refused() -> None:
    header, lines, _ = _time_and_material_invoice()
    with pytest.raises(
        ClosedPeriodError, match="fiscal period 2026-10 is closed in legal entity USPM"
    ):
        post_proposal(header, lines, USPM, date(2026, 10, 31), "CIV-000001", "VOU-000010")


def test_proposal_in_closed_period_moves_to_first_day_of_next_open_period() -> None:
    header, lines, _ = _time_and_material_invoice()
    setup = replace(USPM, move_to_next_open_period=True)
    posted = post_proposal(header, lines, setup, date(2026, 10, 31), "CIV-000001", "VOU-000010")
    assert posted.invoice.invoice_date == date(2026, 11, 1)
    assert posted.voucher.accounting_date == date(2026, 11, 1)
    # Converted at the rate on the moved date: 1.05 (the 1.10 rate starts on 2 November).
    assert posted.invoice.exchange_rate == Decimal("1.0500")
    assert posted.voucher.total(ACCOUNT_RECEIVABLE) == Decimal("1512.00")
    assert posted.voucher.balance == 0


def test_proposal_without_rate_on_posting_date_is_refused() -> None:
    header, lines, _ = _time_and_material_invoice()
    setup = replace(USPM, exchange_rates=())
    with pytest.raises(MissingExchangeRate, match="no exchange rate for EUR→USD on 2026-11-20"):
        post_proposal(header, lines, setup, date(2026, 11, 20), "CIV-000001", "VOU-000010")


def test_unbalanced_voucher_cannot_be_constructed() -> None:
    with pytest.raises(UnbalancedVoucher, match=r"VOU-000001 is off by 0\.01$"):
        Voucher(
            "VOU-000001",
            "USPM",
            date(2026, 11, 1),
            "USD",
            (
                LedgerEntry(ACCOUNT_RECEIVABLE, Decimal("10.00")),
                LedgerEntry(ACCOUNT_REVENUE, Decimal("-9.99")),
            ),
        )


def test_milestone_credit_is_the_exact_mirror_of_its_invoice() -> None:
    def milestone(actual_id: str, amount: str, invoice_id: str, **extra: Any) -> StagingRow:
        return _row(
            actual_id,
            transaction_type=TransactionType.BILLED_SALES,
            transaction_class=TransactionClass.MILESTONE,
            billing_method=BillingMethod.FIXED_PRICE,
            quantity=Decimal("1") if Decimal(amount) > 0 else Decimal("-1"),
            amount=Decimal(amount),
            invoice_id=invoice_id,
            **extra,
        )

    header, lines = _proposal(
        [milestone("M1", "5000.00", "INV-1")], _header(1, tax_amount=Decimal("1000.00"))
    )
    invoice = post_proposal(header, lines, USPM, date(2026, 11, 20), "CIV-000001", "VOU-000001")
    credit_header, credit_lines = _proposal(
        [milestone("M1R", "-5000.00", "INV-2", reverses_actual_id="M1")],
        _header(1, proposal_id="INV-2", tax_amount=Decimal("-1000.00")),
    )
    credit = post_proposal(
        credit_header, credit_lines, USPM, date(2026, 11, 20), "CIV-000002", "VOU-000002"
    )
    assert _entries(invoice.voucher) == [
        (ACCOUNT_RECEIVABLE, Decimal("6720.00")),
        (ACCOUNT_REVENUE, Decimal("-5600.00")),
        (ACCOUNT_SALES_TAX_PAYABLE, Decimal("-1120.00")),
    ]
    assert _entries(credit.voucher) == [(a, -x) for a, x in _entries(invoice.voucher)]
    assert credit.voucher.balance == 0
    assert credit.invoice.total_amount == -invoice.invoice.total_amount == Decimal("-6000.00")
