"""Legal entity setup: exchange rates, fiscal periods, number sequences, line properties."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from schemas.vocabulary import BillingMethod, BillingType, TransactionClass, TransactionType
from services.finance.domain import (
    ClosedPeriodError,
    ExchangeRate,
    FiscalPeriod,
    InvalidStagingRow,
    LegalEntitySetup,
    MissingExchangeRate,
    MissingFiscalPeriod,
    MissingLineProperty,
    NumberSequenceExhausted,
    OneWayViolation,
    StagingRow,
    UnknownLegalEntity,
    entity_number,
    exchange_rate,
    fiscal_year,
    format_number,
    line_property_for,
    refuse_proposal_create,
    refuse_proposal_delete,
    refuse_proposal_rekey,
    resolve_accounting_date,
    to_accounting,
    validate_staging_row,
)

RATES = (
    ExchangeRate("EUR", "USD", date(2026, 10, 1), Decimal("1.0800")),
    ExchangeRate("EUR", "USD", date(2026, 10, 15), Decimal("1.1000")),
    ExchangeRate("EUR", "USD", date(2026, 11, 3), Decimal("1.1200")),
    ExchangeRate("GBP", "USD", date(2026, 10, 1), Decimal("1.2700")),
)


def _setup(**changes: Any) -> LegalEntitySetup:
    setup = LegalEntitySetup(
        "USPM", "USD", exchange_rates=RATES, fiscal_periods=fiscal_year(2026, closed_months=[10])
    )
    return replace(setup, **changes)


def _row(**changes: Any) -> StagingRow:
    values: dict[str, Any] = {
        "actual_id": "A1",
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


# --- exchange rates ---------------------------------------------------------------------------


def test_same_currency_rate_is_one_without_any_table_entry() -> None:
    assert exchange_rate(_setup(exchange_rates=()), "USD", date(2026, 11, 1)) == Decimal(1)


def test_rate_is_the_latest_on_or_before_the_date() -> None:
    setup = _setup()
    assert exchange_rate(setup, "EUR", date(2026, 10, 14)) == Decimal("1.0800")
    assert exchange_rate(setup, "EUR", date(2026, 10, 15)) == Decimal("1.1000")
    assert exchange_rate(setup, "EUR", date(2026, 11, 2)) == Decimal("1.1000")
    # A rate dated after the transaction never applies to it.
    assert exchange_rate(setup, "EUR", date(2026, 11, 3)) == Decimal("1.1200")


def test_rate_before_the_first_entry_is_missing_and_named() -> None:
    with pytest.raises(MissingExchangeRate, match="no exchange rate for EUR→USD on 2026-09-30"):
        exchange_rate(_setup(), "EUR", date(2026, 9, 30))


def test_unknown_currency_pair_is_missing() -> None:
    with pytest.raises(MissingExchangeRate, match="no exchange rate for CHF→USD on 2026-11-01"):
        exchange_rate(_setup(), "CHF", date(2026, 11, 1))


def test_fixed_contract_rate_overrides_the_table_even_without_entries() -> None:
    assert exchange_rate(_setup(), "EUR", date(2026, 11, 5), Decimal("1.05")) == Decimal("1.05")
    assert exchange_rate(_setup(exchange_rates=()), "CHF", date(2026, 11, 5), Decimal("1.13")) == (
        Decimal("1.13")
    )


def test_fixed_rate_does_not_apply_to_accounting_currency() -> None:
    assert exchange_rate(_setup(), "USD", date(2026, 11, 5), Decimal("1.05")) == Decimal(1)


def test_conversion_rounds_half_up_to_cents() -> None:
    assert to_accounting(Decimal("1600.00"), Decimal("1.1000")) == Decimal("1760.00")
    assert to_accounting(Decimal("10.05"), Decimal("0.5")) == Decimal("5.03")
    assert to_accounting(Decimal("-10.05"), Decimal("0.5")) == Decimal("-5.03")


# --- fiscal periods ---------------------------------------------------------------------------


def test_fiscal_period_boundaries_and_name() -> None:
    period = FiscalPeriod(2028, 2)
    assert period.name == "2028-02"
    assert period.first_day == date(2028, 2, 1)
    assert period.last_day == date(2028, 2, 29)


def test_open_period_keeps_the_date() -> None:
    assert resolve_accounting_date(_setup(), date(2026, 11, 20)) == date(2026, 11, 20)


def test_closed_period_is_refused_naming_the_period() -> None:
    with pytest.raises(
        ClosedPeriodError, match="fiscal period 2026-10 is closed in legal entity USPM"
    ):
        resolve_accounting_date(_setup(), date(2026, 10, 31))


def test_closed_period_moves_to_first_day_of_next_open_period_when_switched_on() -> None:
    setup = _setup(
        move_to_next_open_period=True, fiscal_periods=fiscal_year(2026, closed_months=[10, 11])
    )
    assert resolve_accounting_date(setup, date(2026, 10, 20)) == date(2026, 12, 1)


def test_move_with_no_open_period_after_is_refused() -> None:
    setup = _setup(
        move_to_next_open_period=True, fiscal_periods=fiscal_year(2026, closed_months=[11, 12])
    )
    with pytest.raises(ClosedPeriodError, match=r"2026-12 is closed .* no open period follows"):
        resolve_accounting_date(setup, date(2026, 12, 5))


def test_date_outside_the_calendar_is_refused() -> None:
    with pytest.raises(MissingFiscalPeriod, match="no fiscal period for 2027-01-04"):
        resolve_accounting_date(_setup(), date(2027, 1, 4))


# --- number sequences -------------------------------------------------------------------------


def test_number_sequences_format_with_prefix_and_six_digits() -> None:
    assert format_number("PIP", 1) == "PIP-000001"
    assert format_number("CIV", 42) == "CIV-000042"
    assert format_number("VOU", 999999) == "VOU-999999"
    # Numbered per legal entity; the number names its entity, so it stays unique across them.
    assert entity_number("USMF", "CIV", 1) == "USMF-CIV-000001"


def test_number_sequence_refuses_zero_and_overflow() -> None:
    with pytest.raises(ValueError, match="starts at 1"):
        format_number("VOU", 0)
    with pytest.raises(NumberSequenceExhausted, match="VOU is exhausted"):
        format_number("VOU", 1_000_000)


# --- line properties and staging validation ---------------------------------------------------


def test_typical_line_property_mapping() -> None:
    setup = _setup()
    assert line_property_for(setup, BillingType.CHARGEABLE) == "Chargeable"
    assert line_property_for(setup, BillingType.NON_CHARGEABLE) == "NonChargeable"
    assert line_property_for(setup, BillingType.COMPLIMENTARY) == "NonChargeable"


def test_missing_line_property_refuses_the_staging_write() -> None:
    setup = _setup(line_properties={BillingType.CHARGEABLE: "Chargeable"})
    row = _row(billing_type=BillingType.COMPLIMENTARY)
    with pytest.raises(
        MissingLineProperty,
        match="no line property mapped for billing type complimentary in legal entity USPM",
    ):
        validate_staging_row(row, {"USPM": setup})


def test_unknown_legal_entity_refuses_the_staging_write() -> None:
    with pytest.raises(UnknownLegalEntity, match="unknown legal entity DEPM on actual A1"):
        validate_staging_row(_row(legal_entity="DEPM"), {"USPM": _setup()})


def test_valid_rows_pass_validation() -> None:
    setups = {"USPM": _setup()}
    validate_staging_row(_row(), setups)
    validate_staging_row(
        _row(
            transaction_type=TransactionType.BILLED_SALES,
            transaction_class=TransactionClass.MILESTONE,
            billing_method=BillingMethod.FIXED_PRICE,
            invoice_id="INV-1",
        ),
        setups,
    )


def test_billed_sales_row_needs_an_invoice() -> None:
    with pytest.raises(InvalidStagingRow, match="billed sales actual A1 has no invoice_id"):
        validate_staging_row(
            _row(transaction_type=TransactionType.BILLED_SALES), {"USPM": _setup()}
        )


def test_time_and_material_billed_row_may_come_without_unbilled_link() -> None:
    # Import from staging then matches it to its unbilled actual (see matching_unbilled).
    row = _row(transaction_type=TransactionType.BILLED_SALES, invoice_id="INV-1")
    validate_staging_row(row, {"USPM": _setup()})


# --- one-way rule -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("refusal", "verb"),
    [
        (lambda: refuse_proposal_create("INV-1"), "create proposal INV-1"),
        (lambda: refuse_proposal_delete("INV-1"), "delete proposal INV-1"),
        (lambda: refuse_proposal_rekey("INV-1", "INV-9"), "re-key proposal INV-1 to INV-9"),
    ],
)
def test_direct_proposal_changes_are_refused(refusal: object, verb: str) -> None:
    with pytest.raises(OneWayViolation) as caught:
        refusal()  # type: ignore[operator]
    assert verb in str(caught.value)
    assert str(caught.value).endswith("proposals come only from confirmed Dataverse invoices")
