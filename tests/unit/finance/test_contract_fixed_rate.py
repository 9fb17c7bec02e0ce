"""Domain rule 5: a project contract's fixed exchange rate wins over the rate table."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from schemas.vocabulary import BillingMethod, BillingType, TransactionClass, TransactionType
from services.finance.domain import (
    ACCOUNT_ACCRUED_REVENUE,
    ACCOUNT_RECEIVABLE,
    ACCOUNT_REVENUE,
    ACCOUNT_WIP_SALES_VALUE,
    ContractFixedRate,
    ExchangeRate,
    FinanceRuleError,
    IntegrationJournal,
    KnownContract,
    LegalEntitySetup,
    ProposalHeader,
    RateSource,
    StagingRow,
    UnknownLegalEntity,
    applied_rate,
    fiscal_year,
    fix_contract_rate,
    plan_import_from_staging,
    post_integration_journal,
    post_proposal,
    with_lines_imported,
)

DAY = date(2026, 11, 2)
USMF = LegalEntitySetup(
    "USMF",
    "USD",
    exchange_rates=(ExchangeRate("GBP", "USD", date(2026, 1, 1), Decimal("1.30")),),
    fiscal_periods=fiscal_year(2026),
)
SETUPS = {"USMF": USMF}
FIXED = ContractFixedRate("C1", "USMF", "GBP", "USD", Decimal("1.25"))


def _row(actual_id: str, **changes: Any) -> StagingRow:
    values: dict[str, Any] = {
        "actual_id": actual_id,
        "legal_entity": "USMF",
        "transaction_type": TransactionType.UNBILLED_SALES,
        "transaction_class": TransactionClass.TIME,
        "billing_type": BillingType.CHARGEABLE,
        "billing_method": BillingMethod.TIME_AND_MATERIAL,
        "quantity": Decimal("7"),
        "amount": Decimal("1750.00"),  # 7 h × 250 GBP
        "currency": "GBP",
        "accounting_date": DAY,
        "project_id": "P1",
        "contract_id": "C1",
        "contract_line_id": "CL1",
        "customer_id": "CUST1",
    }
    values.update(changes)
    return StagingRow(**values)


def _header() -> ProposalHeader:
    return ProposalHeader("INV-1", "USMF", "CUST1", "C1", "GBP", expected_billed_lines=1)


def _post_everything(rates: dict[str, ContractFixedRate]) -> tuple[Any, Any]:
    """The whole chain in the domain: journal, its posting, the proposal and its posting."""
    unbilled = _row("U1")
    billed = _row(
        "B1",
        transaction_type=TransactionType.BILLED_SALES,
        invoice_id="INV-1",
        unbilled_actual_id="U1",
    )
    plan = plan_import_from_staging([unbilled], [], SETUPS, fixed_contract_rates=rates)
    journal = IntegrationJournal("USMF-PJ-000001", "USMF", plan.journals[0].lines)
    posted_journal = post_integration_journal(journal, USMF, ["USMF-VOU-000001"], rates)
    (stamp,) = posted_journal.stamps
    posted_unbilled = replace(unbilled, imported=True, accounting=stamp)
    plan = plan_import_from_staging(
        [posted_unbilled, billed], [_header()], SETUPS, fixed_contract_rates=rates
    )
    lines = plan.proposal_lines["INV-1"]
    invoice = post_proposal(
        with_lines_imported(_header()),
        lines,
        USMF,
        date(2026, 11, 20),
        "USMF-CIV-000001",
        "USMF-VOU-000002",
        rates,
    )
    return posted_journal, invoice


def test_seven_hours_at_250_gbp_fixed_at_1_25_post_2187_50_usd_though_the_table_says_1_30() -> None:
    journal, invoice = _post_everything({"C1": FIXED})
    (stamp,) = journal.stamps
    assert (stamp.exchange_rate, stamp.accounting_currency_amount) == (
        Decimal("1.25"),
        Decimal("2187.50"),
    )
    assert stamp.exchange_rate_source is RateSource.CONTRACT_FIXED_RATE
    assert invoice.invoice.net_amount == Decimal("1750.00")
    assert invoice.invoice.currency == "GBP"
    assert invoice.invoice.exchange_rate == Decimal("1.25")
    assert invoice.invoice.total_accounting_amount == Decimal("2187.50")
    assert invoice.invoice.exchange_rate_source is RateSource.CONTRACT_FIXED_RATE
    assert [(e.account, e.amount) for e in invoice.voucher.entries] == [
        (ACCOUNT_RECEIVABLE, Decimal("2187.50")),
        (ACCOUNT_REVENUE, Decimal("-2187.50")),
        (ACCOUNT_ACCRUED_REVENUE, Decimal("2187.50")),
        (ACCOUNT_WIP_SALES_VALUE, Decimal("-2187.50")),
    ]
    (billed_stamp,) = invoice.stamps
    assert billed_stamp.accounting_currency_amount == Decimal("2187.50")
    assert billed_stamp.exchange_rate_source is RateSource.CONTRACT_FIXED_RATE


def test_without_a_fixed_rate_the_table_applies_and_says_so() -> None:
    journal, invoice = _post_everything({})
    assert journal.stamps[0].accounting_currency_amount == Decimal("2275.00")
    assert journal.stamps[0].exchange_rate_source is RateSource.EXCHANGE_RATE_TABLE
    assert invoice.invoice.total_accounting_amount == Decimal("2275.00")
    assert invoice.invoice.exchange_rate_source is RateSource.EXCHANGE_RATE_TABLE


def test_a_rate_of_another_entity_or_currency_pair_is_not_used() -> None:
    other_entity = replace(FIXED, legal_entity="GBSI")
    other_currency = replace(FIXED, contract_currency="EUR")
    for fixed in (other_entity, other_currency):
        applied = applied_rate(USMF, "GBP", DAY, fixed)
        assert applied.rate == Decimal("1.30")
        assert applied.source is RateSource.EXCHANGE_RATE_TABLE
    assert applied_rate(USMF, "USD", DAY, FIXED).source is RateSource.SAME_CURRENCY


def test_a_rate_set_after_the_import_applies_when_the_journal_is_posted() -> None:
    plan = plan_import_from_staging([_row("U1")], [], SETUPS)
    (line,) = plan.journals[0].lines
    assert (line.exchange_rate, line.exchange_rate_source) == (
        Decimal("1.30"),
        RateSource.EXCHANGE_RATE_TABLE,
    )
    journal = IntegrationJournal("USMF-PJ-000001", "USMF", plan.journals[0].lines)
    posted = post_integration_journal(journal, USMF, ["USMF-VOU-000001"], {"C1": FIXED})
    assert posted.stamps[0].accounting_currency_amount == Decimal("2187.50")
    assert posted.stamps[0].exchange_rate_source is RateSource.CONTRACT_FIXED_RATE


def test_a_fixed_rate_unblocks_a_row_the_table_has_no_rate_for() -> None:
    no_table = {"USMF": replace(USMF, exchange_rates=())}
    assert plan_import_from_staging([_row("U1")], [], no_table).row_reasons == {
        "U1": "no exchange rate for GBP→USD on 2026-11-02"
    }
    plan = plan_import_from_staging([_row("U1")], [], no_table, fixed_contract_rates={"C1": FIXED})
    assert plan.row_reasons == {}
    assert plan.journals[0].lines[0].exchange_rate == Decimal("1.25")


# --- setting the rate ---------------------------------------------------------------------------


def test_a_contract_finance_has_not_seen_yet_may_get_its_rate() -> None:
    fixed = fix_contract_rate("C9", USMF, "USMF", "GBP", Decimal("1.25"), known=None)
    assert fixed == ContractFixedRate("C9", "USMF", "GBP", "USD", Decimal("1.25"))


def test_a_known_contract_in_its_entity_and_currency_may_get_its_rate() -> None:
    known = KnownContract("C1", frozenset({"USMF"}), frozenset({"GBP"}))
    assert fix_contract_rate("C1", USMF, "USMF", "GBP", Decimal("1.2"), known).rate == Decimal(
        "1.2"
    )


@pytest.mark.parametrize(
    ("setup", "currency", "known", "error", "message"),
    [
        (None, "GBP", None, UnknownLegalEntity, "unknown legal entity USMF"),
        (USMF, "USD", None, FinanceRuleError, "accounting currency of legal entity USMF"),
        (
            USMF,
            "GBP",
            KnownContract("C1", frozenset({"GBSI"}), frozenset({"GBP"})),
            FinanceRuleError,
            "contract C1 belongs to legal entity GBSI in Finance, not USMF",
        ),
        (
            USMF,
            "GBP",
            KnownContract("C1", frozenset({"USMF"}), frozenset({"EUR"})),
            FinanceRuleError,
            "contract C1 is in EUR in Finance, not GBP",
        ),
    ],
)
def test_setting_a_rate_is_refused_with_a_reason(
    setup: LegalEntitySetup | None,
    currency: str,
    known: KnownContract | None,
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        fix_contract_rate("C1", setup, "USMF", currency, Decimal("1.25"), known)
