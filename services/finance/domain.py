"""Finance business rules: legal entity setup, actuals staging, import from staging, posting.

Pure code: no database, broker, HTTP or clock. Dates, numbers and ids come in as arguments, and
results come back as records for the caller to store. Every refusal is a `FinanceRuleError`
whose message names the bad setting or field (the API turns them into HTTP 409/422).

Sign convention in the ledger: a `LedgerEntry.amount` is signed, debit positive and credit
negative, in the legal entity's accounting currency; a voucher balances when its entries sum
to zero.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Any, NoReturn

from schemas.vocabulary import BillingMethod, BillingType, TransactionClass, TransactionType
from services.common.errors import OneWayViolation, RuleError

# --- ledger accounts --------------------------------------------------------------------------

ACCOUNT_RECEIVABLE = "130100 Accounts receivable"
ACCOUNT_REVENUE = "Revenue – project"
ACCOUNT_SALES_TAX_PAYABLE = "Sales tax payable"
ACCOUNT_WIP_SALES_VALUE = "WIP – sales value"
ACCOUNT_ACCRUED_REVENUE = "Accrued revenue"
ACCOUNT_WIP_COST = "WIP – cost"
ACCOUNT_ACCRUED_COST = "Accrued cost"

# --- number sequences -------------------------------------------------------------------------

PROPOSAL_PREFIX = "PIP"
INVOICE_PREFIX = "CIV"
VOUCHER_PREFIX = "VOU"
JOURNAL_PREFIX = "PJ"
NUMBER_WIDTH = 6


class NumberSequence(StrEnum):
    """Finance's number sequences; each legal entity has its own counter of each."""

    JOURNAL = "journal"
    INVOICE = "invoice"
    VOUCHER = "voucher"


NUMBER_PREFIXES: dict[NumberSequence, str] = {
    NumberSequence.JOURNAL: JOURNAL_PREFIX,
    NumberSequence.INVOICE: INVOICE_PREFIX,
    NumberSequence.VOUCHER: VOUCHER_PREFIX,
}

DEFAULT_MAX_LINES_PER_JOURNAL = 200

ONE_WAY_MESSAGE = "proposals come only from confirmed Dataverse invoices"
NOT_POSTED_YET = "project transaction not posted yet"
MISMATCHED_BILLED = "mismatched billed sales actuals"

CENT = Decimal("0.01")

# Classes whose billed sales replace unbilled sales that the integration journal accrued as WIP.
# Milestones and fees are billed straight to revenue: they never had an unbilled actual to post.
_WIP_CLASSES = frozenset(
    {TransactionClass.TIME, TransactionClass.EXPENSE, TransactionClass.MATERIAL}
)


# --- errors -----------------------------------------------------------------------------------


class FinanceRuleError(RuleError):
    """A Finance business rule refused the request; the message names the setting or field."""


class UnknownLegalEntity(FinanceRuleError):
    """The record names a legal entity that Finance has no setup for."""


class MissingLineProperty(FinanceRuleError):
    """The legal entity maps no line property to the record's billing type (domain rule 6)."""


class MissingExchangeRate(FinanceRuleError):
    """No exchange rate on or before the date converts the currency to accounting currency."""


class MissingFiscalPeriod(FinanceRuleError):
    """The accounting date falls in no fiscal period of the legal entity's calendar."""


class ClosedPeriodError(FinanceRuleError):
    """The fiscal period of the accounting date is closed and may not be moved (domain rule 7)."""


class InvalidStagingRow(FinanceRuleError):
    """A staged actual lacks a field its transaction type needs."""


class ProposalNotReady(FinanceRuleError):
    """The proposal cannot be posted yet: it has no lines."""


class AlreadyPosted(FinanceRuleError):
    """A proposal or integration journal may be posted only once."""


class UnbalancedVoucher(FinanceRuleError):
    """A voucher's entries do not sum to zero; raised by construction, never expected."""


class NumberSequenceExhausted(FinanceRuleError):
    """The counter no longer fits the number sequence's width."""


# --- option sets owned by Finance -------------------------------------------------------------


class PeriodUnit(StrEnum):
    """Import from staging setting: one integration journal per legal entity and period."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class ProposalStatus(StrEnum):
    """Life of a project invoice proposal: open → lines_imported → posted."""

    OPEN = "open"
    LINES_IMPORTED = "lines_imported"
    POSTED = "posted"


# --- legal entity setup -----------------------------------------------------------------------


@dataclass(frozen=True)
class ExchangeRate:
    """One accounting units per `from_currency` unit, valid from `valid_from` until replaced."""

    from_currency: str
    to_currency: str
    valid_from: date
    rate: Decimal


class RateSource(StrEnum):
    """Why a posting used its exchange rate (shown on journal lines, stamps and invoices)."""

    CONTRACT_FIXED_RATE = "contract fixed rate"
    EXCHANGE_RATE_TABLE = "exchange rate table"
    SAME_CURRENCY = "same currency"


@dataclass(frozen=True)
class ContractFixedRate:
    """A project contract's fixed rate: `rate` accounting-currency units per contract-currency
    unit, in the contract's legal entity (domain rule 5). Finance knows the contract only by
    the id its proposals and staged rows carry."""

    contract_id: str
    legal_entity: str
    contract_currency: str
    accounting_currency: str
    rate: Decimal

    def applies_to(self, setup: LegalEntitySetup, from_currency: str) -> bool:
        """Whether the rate converts `from_currency` in this legal entity's accounting currency.

        A rate set for another entity or currency pair than the row's is not used: the row is
        converted with the table, and its stamp says so.
        """
        return (
            self.legal_entity == setup.legal_entity_id
            and self.contract_currency == from_currency
            and self.accounting_currency == setup.accounting_currency
        )


@dataclass(frozen=True)
class AppliedRate:
    """The rate a posting converts with, and why it is that one."""

    rate: Decimal
    source: RateSource


@dataclass(frozen=True)
class KnownContract:
    """What Finance has seen of a contract on its proposals and staged rows."""

    contract_id: str
    legal_entities: frozenset[str]
    currencies: frozenset[str]


@dataclass(frozen=True)
class FiscalPeriod:
    """A monthly fiscal period of a legal entity's calendar."""

    year: int
    month: int
    closed: bool = False

    @property
    def name(self) -> str:
        """The period as people name it, e.g. "2026-11"."""
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def first_day(self) -> date:
        """First day of the period."""
        return date(self.year, self.month, 1)

    @property
    def last_day(self) -> date:
        """Last day of the period."""
        return date(self.year, self.month, calendar.monthrange(self.year, self.month)[1])

    def contains(self, day: date) -> bool:
        """Whether `day` falls in this period."""
        return (day.year, day.month) == (self.year, self.month)


def fiscal_year(year: int, closed_months: Iterable[int] = ()) -> tuple[FiscalPeriod, ...]:
    """Twelve monthly periods of `year`, those in `closed_months` (1–12) closed."""
    closed = frozenset(closed_months)
    return tuple(FiscalPeriod(year, month, month in closed) for month in range(1, 13))


def typical_line_properties() -> dict[BillingType, str]:
    """The usual billing type → line property mapping of a legal entity."""
    return {
        BillingType.CHARGEABLE: "Chargeable",
        BillingType.NON_CHARGEABLE: "NonChargeable",
        BillingType.COMPLIMENTARY: "NonChargeable",
    }


@dataclass(frozen=True)
class LegalEntitySetup:
    """What Finance needs to know about a legal entity to import and post project actuals."""

    legal_entity_id: str
    accounting_currency: str
    line_properties: Mapping[BillingType, str] = field(default_factory=typical_line_properties)
    exchange_rates: tuple[ExchangeRate, ...] = ()
    fiscal_periods: tuple[FiscalPeriod, ...] = ()
    # "Move the accounting date to the next open period" instead of refusing a closed period.
    move_to_next_open_period: bool = False


@dataclass(frozen=True)
class ImportSettings:
    """Settings of the periodic import from staging."""

    # Cost and unbilled rows go to one journal per legal entity and period of accounting date.
    period_unit: PeriodUnit = PeriodUnit.MONTH
    # A journal holds at most this many lines; more rows of the same period open another one.
    max_lines_per_journal: int = DEFAULT_MAX_LINES_PER_JOURNAL


def format_number(prefix: str, n: int, width: int = NUMBER_WIDTH) -> str:
    """The n-th number of a sequence, e.g. `format_number("CIV", 1)` → "CIV-000001"."""
    if n < 1:
        raise ValueError(f"number sequence {prefix} starts at 1, got {n}")
    digits = str(n)
    if len(digits) > width:
        raise NumberSequenceExhausted(
            f"number sequence {prefix} is exhausted: {n} does not fit {width} digits"
        )
    return f"{prefix}-{digits.zfill(width)}"


def entity_number(legal_entity: str, prefix: str, n: int) -> str:
    """The n-th number of a legal entity's sequence, e.g. `entity_number("USMF", "CIV", 1)` →
    "USMF-CIV-000001": numbered per entity, and unique across entities because it names one."""
    return format_number(f"{legal_entity}-{prefix}", n)


def line_property_for(setup: LegalEntitySetup, billing_type: BillingType) -> str:
    """The line property the legal entity maps to `billing_type`; refuses a missing mapping."""
    line_property = setup.line_properties.get(billing_type)
    if not line_property:
        raise MissingLineProperty(
            f"no line property mapped for billing type {billing_type.value} "
            f"in legal entity {setup.legal_entity_id}"
        )
    return line_property


def exchange_rate(
    setup: LegalEntitySetup,
    from_currency: str,
    on: date,
    fixed_rate: Decimal | None = None,
) -> Decimal:
    """Rate converting `from_currency` into the accounting currency on `on`.

    Same currency → 1. A contract's fixed rate overrides the table. Otherwise the applicable rate
    is the one with the latest `valid_from` on or before `on`; none → `MissingExchangeRate`.
    """
    to_currency = setup.accounting_currency
    if from_currency == to_currency:
        return Decimal(1)
    if fixed_rate is not None:
        return fixed_rate
    candidates = [
        r
        for r in setup.exchange_rates
        if r.from_currency == from_currency and r.to_currency == to_currency and r.valid_from <= on
    ]
    if not candidates:
        raise MissingExchangeRate(
            f"no exchange rate for {from_currency}→{to_currency} on {on.isoformat()}"
        )
    return max(candidates, key=lambda r: r.valid_from).rate


def applied_rate(
    setup: LegalEntitySetup,
    from_currency: str,
    on: date,
    contract_rate: ContractFixedRate | None = None,
) -> AppliedRate:
    """The rate converting `from_currency` on `on`, and its source (domain rule 5).

    Same currency → 1. A contract fixed rate for this entity and currency pair → that rate,
    whatever the table says. Otherwise the table (`exchange_rate`; none → `MissingExchangeRate`).
    """
    if from_currency == setup.accounting_currency:
        return AppliedRate(Decimal(1), RateSource.SAME_CURRENCY)
    if contract_rate is not None and contract_rate.applies_to(setup, from_currency):
        return AppliedRate(contract_rate.rate, RateSource.CONTRACT_FIXED_RATE)
    return AppliedRate(exchange_rate(setup, from_currency, on), RateSource.EXCHANGE_RATE_TABLE)


def fix_contract_rate(
    contract_id: str,
    setup: LegalEntitySetup | None,
    legal_entity: str,
    contract_currency: str,
    rate: Decimal,
    known: KnownContract | None,
) -> ContractFixedRate:
    """Set (or change) a project contract's fixed exchange rate (project accountant).

    Refuses an unknown legal entity, a rate that is not positive, a contract currency equal to
    the accounting currency (nothing to convert), and a contract Finance has already seen in
    another legal entity or currency. A contract Finance has not seen yet may get its rate:
    it is kept and applies when the contract's first proposal or staged row arrives.
    """
    if setup is None:
        raise UnknownLegalEntity(
            f"unknown legal entity {legal_entity} for the fixed rate of contract {contract_id}"
        )
    if rate <= 0:
        raise FinanceRuleError(f"fixed rate of contract {contract_id} must be above 0, got {rate}")
    if contract_currency == setup.accounting_currency:
        raise FinanceRuleError(
            f"contract {contract_id} is in {contract_currency}, the accounting currency of "
            f"legal entity {legal_entity}: a fixed rate has nothing to convert"
        )
    if known is not None:
        others = sorted(known.legal_entities - {legal_entity})
        if others:
            raise FinanceRuleError(
                f"contract {contract_id} belongs to legal entity {', '.join(others)} in Finance, "
                f"not {legal_entity}"
            )
        currencies = sorted(known.currencies - {contract_currency})
        if currencies:
            raise FinanceRuleError(
                f"contract {contract_id} is in {', '.join(currencies)} in Finance, "
                f"not {contract_currency}"
            )
    return ContractFixedRate(
        contract_id, legal_entity, contract_currency, setup.accounting_currency, rate
    )


def to_accounting(amount: Decimal, rate: Decimal) -> Decimal:
    """`amount` converted with `rate`, rounded to cents half up."""
    return (amount * rate).quantize(CENT, rounding=ROUND_HALF_UP)


def fiscal_period_of(setup: LegalEntitySetup, day: date) -> FiscalPeriod:
    """The fiscal period containing `day`; refuses a date outside the calendar."""
    for period in setup.fiscal_periods:
        if period.contains(day):
            return period
    raise MissingFiscalPeriod(
        f"no fiscal period for {day.isoformat()} in legal entity {setup.legal_entity_id}"
    )


def resolve_accounting_date(setup: LegalEntitySetup, day: date) -> date:
    """The accounting date a posting on `day` gets (domain rule 7).

    An open period keeps `day`. A closed one refuses with `ClosedPeriodError`, unless the legal
    entity moves accounting dates: then the first day of the first open period after it.
    """
    period = fiscal_period_of(setup, day)
    if not period.closed:
        return day
    if not setup.move_to_next_open_period:
        raise ClosedPeriodError(
            f"fiscal period {period.name} is closed in legal entity {setup.legal_entity_id} "
            f"(accounting date {day.isoformat()}; move_to_next_open_period is off)"
        )
    later_open = sorted(
        (p for p in setup.fiscal_periods if not p.closed and p.first_day > period.last_day),
        key=lambda p: p.first_day,
    )
    if not later_open:
        raise ClosedPeriodError(
            f"fiscal period {period.name} is closed in legal entity {setup.legal_entity_id} "
            f"and no open period follows it"
        )
    return later_open[0].first_day


# --- staging ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountingStamp:
    """Accounting detail posting writes on a staged row; it flows back to the Dataverse actual."""

    actual_id: str
    voucher: str
    voucher_date: date
    exchange_rate: Decimal
    accounting_currency_amount: Decimal  # the actual's amount in accounting currency
    tax_amount: Decimal = Decimal("0.00")  # sales tax in the transaction currency
    # Why this rate (None on rows stamped before Finance recorded it).
    exchange_rate_source: RateSource | None = None


@dataclass(frozen=True)
class StagingRow:
    """An actual (`msdyn_actual`) as it sits in Finance's actuals staging table.

    `invoice_id` is the proposal a billed-sales row belongs to. `unbilled_actual_id` links a
    time-and-material billed-sales row to the unbilled-sales actual it bills (the new one when
    confirmation replaced the original): that actual's posting through the integration journal
    is what the billed row waits for (see `matching_unbilled` when the link is absent).
    `reverses_actual_id` marks a reversal; a billed-sales reversal is a corrective credit.
    `billing_method` None is read as time and material, the only method with such classes.
    """

    actual_id: str
    legal_entity: str
    transaction_type: TransactionType
    transaction_class: TransactionClass
    billing_type: BillingType
    quantity: Decimal
    amount: Decimal
    currency: str
    accounting_date: date
    project_id: str
    billing_method: BillingMethod | None = None
    contract_id: str | None = None
    contract_line_id: str | None = None
    customer_id: str | None = None
    invoice_id: str | None = None
    unbilled_actual_id: str | None = None
    reverses_actual_id: str | None = None
    imported: bool = False
    accounting: AccountingStamp | None = None

    @property
    def posted(self) -> bool:
        """Whether Finance has posted the row (it carries a voucher)."""
        return self.accounting is not None

    @property
    def needs_posted_unbilled(self) -> bool:
        """Whether this billed row replaces unbilled sales the integration journal accrued.

        Such a row is imported only after that unbilled actual is posted, and posting the
        invoice reverses its WIP. A billed-sales reversal (corrective credit) is not one: the
        quantity it gives back returns to WIP through a new unbilled actual that the journal
        posts, so moving WIP on the credit as well would count it twice.
        """
        return (
            self.transaction_type is TransactionType.BILLED_SALES
            and self.billing_method is not BillingMethod.FIXED_PRICE
            and self.transaction_class in _WIP_CLASSES
            and self.reverses_actual_id is None
        )


def validate_staging_row(row: StagingRow, setups: Mapping[str, LegalEntitySetup]) -> None:
    """Refuse an actual arriving from the bridge that Finance cannot take (domain rule 6).

    Raises `UnknownLegalEntity`, `MissingLineProperty` or `InvalidStagingRow`; the caller fails
    the write with the message so the bridge keeps the record with its reason.
    """
    setup = setups.get(row.legal_entity)
    if setup is None:
        raise UnknownLegalEntity(
            f"unknown legal entity {row.legal_entity} on actual {row.actual_id}"
        )
    line_property_for(setup, row.billing_type)
    if not row.currency:
        raise InvalidStagingRow(f"actual {row.actual_id} has no currency")
    if row.transaction_type is TransactionType.BILLED_SALES and not row.invoice_id:
        raise InvalidStagingRow(f"billed sales actual {row.actual_id} has no invoice_id")


def matching_unbilled(billed: StagingRow, rows: Iterable[StagingRow]) -> list[StagingRow]:
    """The staged unbilled-sales actual(s) a time-and-material billed row bills.

    With `unbilled_actual_id`, that actual alone. Without it, every staged unbilled row that
    confirmation could have copied the billed row from: same legal entity, project, contract
    line, class, billing type, currency, quantity and amount. The caller waits while any match
    is unposted, so an identical entry not yet through the journal makes the proposal wait
    rather than proceed on another entry's posting.
    """
    return UnbilledIndex(rows).matches(billed)


def _copy_key(row: StagingRow) -> tuple[Any, ...]:
    """What confirmation copies from an unbilled row onto its billed row (see above)."""
    return (
        row.legal_entity,
        row.project_id,
        row.contract_line_id,
        row.transaction_class,
        row.billing_type,
        row.currency,
        row.quantity,
        row.amount,
    )


class UnbilledIndex:
    """`matching_unbilled` over one set of staged rows, by lookup: an invoice of thousands of
    lines would otherwise scan every staged row for each billed row."""

    def __init__(self, rows: Iterable[StagingRow]) -> None:
        self._by_id: dict[str, list[StagingRow]] = {}
        self._by_copy: dict[tuple[Any, ...], list[StagingRow]] = {}
        for row in rows:
            self._by_id.setdefault(row.actual_id, []).append(row)
            if row.transaction_type is TransactionType.UNBILLED_SALES:
                self._by_copy.setdefault(_copy_key(row), []).append(row)

    def matches(self, billed: StagingRow) -> list[StagingRow]:
        """The rows `matching_unbilled` returns for `billed`, in the order given."""
        if billed.unbilled_actual_id is not None:
            return list(self._by_id.get(billed.unbilled_actual_id, []))
        return list(self._by_copy.get(_copy_key(billed), []))


# --- integration journals ---------------------------------------------------------------------


@dataclass(frozen=True)
class JournalLine:
    """One integration journal line: exactly one cost or unbilled-sales actual."""

    line_number: int
    actual_id: str
    transaction_type: TransactionType
    transaction_class: TransactionClass
    billing_type: BillingType
    line_property: str
    quantity: Decimal
    amount: Decimal  # transaction currency
    currency: str
    accounting_date: date
    exchange_rate: Decimal  # fixed at import, when the rate was checked
    project_id: str
    contract_id: str | None
    exchange_rate_source: RateSource | None = None


@dataclass(frozen=True)
class PlannedJournal:
    """A journal import from staging would create; the caller gives it its number."""

    legal_entity: str
    period_start: date
    lines: tuple[JournalLine, ...]


@dataclass(frozen=True)
class IntegrationJournal:
    """A stored integration journal, ready for the project accountant to post."""

    journal_id: str
    legal_entity: str
    lines: tuple[JournalLine, ...]
    posted: bool = False


# --- proposals --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProposalHeader:
    """A project invoice proposal header, as sent by a confirmed Dataverse invoice.

    `proposal_id` is the proforma's invoice ID. `expected_billed_lines` is how many billed-sales
    actuals confirmation made for it; `tax_amount` is the invoice's sales tax (negative on a
    credit).
    """

    proposal_id: str
    legal_entity: str
    customer_id: str
    contract_id: str
    currency: str
    expected_billed_lines: int
    tax_amount: Decimal = Decimal("0.00")
    status: ProposalStatus = ProposalStatus.OPEN
    waiting_reason: str | None = None
    invoice_number: str | None = None


@dataclass(frozen=True)
class ProposalLine:
    """A proposal line: exactly one staged billed-sales actual of the proposal's invoice."""

    proposal_id: str
    line_number: int
    actual_id: str
    transaction_class: TransactionClass
    billing_type: BillingType
    line_property: str
    quantity: Decimal
    amount: Decimal  # transaction currency; counts in totals only when chargeable
    currency: str
    project_id: str
    contract_line_id: str | None
    unbilled_actual_id: str | None
    # Rate the linked unbilled sales were accrued at as WIP; None when nothing was accrued
    # (milestone, fee, non-chargeable unbilled), so posting books straight revenue.
    accrued_wip_rate: Decimal | None = None

    @property
    def chargeable(self) -> bool:
        """Only chargeable lines count in invoice totals."""
        return self.billing_type is BillingType.CHARGEABLE


@dataclass(frozen=True)
class ProposalTotals:
    """Proposal amounts in its currency: net = chargeable lines, total = net + tax."""

    net_amount: Decimal
    tax_amount: Decimal
    total_amount: Decimal


def proposal_totals(header: ProposalHeader, lines: Sequence[ProposalLine]) -> ProposalTotals:
    """Totals of a proposal (domain rule 4): sum of chargeable lines, plus the header's tax."""
    net = sum((line.amount for line in lines if line.chargeable), Decimal("0.00"))
    return ProposalTotals(net, header.tax_amount, net + header.tax_amount)


def with_lines_imported(header: ProposalHeader) -> ProposalHeader:
    """The header after import from staging gave it its lines (open → lines_imported)."""
    if header.status is not ProposalStatus.OPEN:
        raise FinanceRuleError(
            f"proposal {header.proposal_id} is {header.status.value}: lines are imported only once"
        )
    return replace(header, status=ProposalStatus.LINES_IMPORTED, waiting_reason=None)


# --- import from staging ----------------------------------------------------------------------


@dataclass(frozen=True)
class ImportPlan:
    """What one run of import from staging does.

    `waiting` gives, per proposal left without lines, the reason; `row_reasons` gives, per staged
    row this run could not take for a reason of its own, that reason. Nothing is dropped silently:
    every unimported row is either in `row_reasons` or behind a proposal in `waiting`.
    """

    journals: tuple[PlannedJournal, ...]
    proposal_lines: Mapping[str, tuple[ProposalLine, ...]]
    waiting: Mapping[str, str]
    row_reasons: Mapping[str, str]

    @property
    def imported_actual_ids(self) -> frozenset[str]:
        """Staged rows this run imports; the caller marks them imported in the same transaction."""
        ids = {line.actual_id for j in self.journals for line in j.lines}
        ids.update(line.actual_id for lines in self.proposal_lines.values() for line in lines)
        return frozenset(ids)


def period_start(day: date, unit: PeriodUnit) -> date:
    """First day of the day / ISO week (Monday) / month holding `day`."""
    if unit is PeriodUnit.DAY:
        return day
    if unit is PeriodUnit.WEEK:
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def _row_problem(
    row: StagingRow,
    setups: Mapping[str, LegalEntitySetup],
    fixed_contract_rates: Mapping[str, ContractFixedRate],
) -> str | None:
    """Why the row cannot be imported on its own, or None."""
    try:
        validate_staging_row(row, setups)
        applied_rate(
            setups[row.legal_entity],
            row.currency,
            row.accounting_date,
            fixed_contract_rates.get(row.contract_id or ""),
        )
    except FinanceRuleError as exc:
        return str(exc)
    return None


def plan_import_from_staging(
    rows: Iterable[StagingRow],
    proposals: Iterable[ProposalHeader],
    setups: Mapping[str, LegalEntitySetup],
    settings: ImportSettings | None = None,
    fixed_contract_rates: Mapping[str, ContractFixedRate] | None = None,
) -> ImportPlan:
    """Plan one run of import from staging (domain flow steps 3 and 8).

    Rows already imported are skipped, so a row is never imported twice. A row whose contract
    has a fixed rate in `fixed_contract_rates` (by contract id) is converted with it, whatever
    the rate table says (domain rule 5).

    Cost and unbilled-sales rows become integration journal lines, one per actual, in journals
    per legal entity and period of accounting date, at most `max_lines_per_journal` lines each.

    Billed-sales rows become proposal lines, all or none per open proposal whose header exists.
    A proposal waits, with the first reason that applies:
    - "waiting for N of M billed sales actuals" (N still missing of the M expected);
    - "mismatched billed sales actuals: S staged for M expected" when more than M are staged;
    - the reason of one of its rows (e.g. no exchange rate, no line property);
    - "project transaction not posted yet: ..." when a time-and-material row's unbilled actual
      (`matching_unbilled`) is not in staging or not posted through the integration journal.
      A billed-sales reversal (corrective credit), milestone or fee waits for no journal.
    """
    settings = settings or ImportSettings()
    if settings.max_lines_per_journal < 1:
        raise ValueError("max_lines_per_journal must be at least 1")
    rates = fixed_contract_rates or {}
    all_rows = list(rows)
    headers = {header.proposal_id: header for header in proposals}
    pending = sorted((r for r in all_rows if not r.imported), key=lambda r: r.actual_id)

    row_reasons: dict[str, str] = {}
    journal_rows: list[StagingRow] = []
    billed_by_invoice: dict[str, list[StagingRow]] = defaultdict(list)
    for row in pending:
        if row.transaction_type is TransactionType.BILLED_SALES:
            billed_by_invoice[row.invoice_id or ""].append(row)
            continue
        problem = _row_problem(row, setups, rates)
        if problem is not None:
            row_reasons[row.actual_id] = problem
        else:
            journal_rows.append(row)

    journals = _plan_journals(journal_rows, setups, settings, rates)

    proposal_lines: dict[str, tuple[ProposalLine, ...]] = {}
    waiting: dict[str, str] = {}
    for invoice_id, billed in billed_by_invoice.items():
        header = headers.get(invoice_id)
        if header is None or header.status is not ProposalStatus.OPEN:
            reason = (
                f"no proposal header {invoice_id} received yet"
                if header is None
                else f"proposal {invoice_id} is {header.status.value}: its lines are complete"
            )
            if not invoice_id:
                reason = "billed sales actual has no invoice_id"
            for row in billed:
                row_reasons[row.actual_id] = reason
            continue
        lines, wait = _plan_proposal(header, billed, all_rows, setups, rates, row_reasons)
        if wait is None:
            proposal_lines[invoice_id] = lines
        else:
            waiting[invoice_id] = wait

    for header in headers.values():
        if header.status is ProposalStatus.OPEN and header.proposal_id not in billed_by_invoice:
            waiting[header.proposal_id] = _count_reason(0, header.expected_billed_lines)

    return ImportPlan(tuple(journals), proposal_lines, waiting, row_reasons)


def _plan_journals(
    rows: Sequence[StagingRow],
    setups: Mapping[str, LegalEntitySetup],
    settings: ImportSettings,
    rates: Mapping[str, ContractFixedRate],
) -> list[PlannedJournal]:
    groups: dict[tuple[str, date], list[StagingRow]] = defaultdict(list)
    for row in rows:
        groups[(row.legal_entity, period_start(row.accounting_date, settings.period_unit))].append(
            row
        )
    journals: list[PlannedJournal] = []
    for (legal_entity, start), group in sorted(groups.items()):
        setup = setups[legal_entity]
        group.sort(key=lambda r: (r.accounting_date, r.actual_id))
        size = settings.max_lines_per_journal
        for offset in range(0, len(group), size):
            chunk = group[offset : offset + size]
            lines: list[JournalLine] = []
            for number, row in enumerate(chunk, start=1):
                applied = applied_rate(
                    setup, row.currency, row.accounting_date, rates.get(row.contract_id or "")
                )
                lines.append(
                    JournalLine(
                        line_number=number,
                        actual_id=row.actual_id,
                        transaction_type=row.transaction_type,
                        transaction_class=row.transaction_class,
                        billing_type=row.billing_type,
                        line_property=line_property_for(setup, row.billing_type),
                        quantity=row.quantity,
                        amount=row.amount,
                        currency=row.currency,
                        accounting_date=row.accounting_date,
                        exchange_rate=applied.rate,
                        project_id=row.project_id,
                        contract_id=row.contract_id,
                        exchange_rate_source=applied.source,
                    )
                )
            journals.append(PlannedJournal(legal_entity, start, tuple(lines)))
    return journals


def billed_still_arriving(staged: int, header: ProposalHeader) -> str | None:
    """Why an open proposal waits before its rows are even read, or None to plan it.

    While fewer billed-sales rows are staged than the header expects, no plan can give it lines
    (all or none), and the count decides its reason ("waiting for N of M …"), as it would in
    `plan_import_from_staging`. The import then counts the rows instead of reading them: an
    invoice of 10,000 lines otherwise had every arrived row read and checked at every run
    while the rest were still on their way. Problems of single rows (a missing exchange rate,
    say) are reported once every row is there.
    """
    if staged < header.expected_billed_lines:
        return _count_reason(staged, header.expected_billed_lines)
    return None


def _count_reason(staged: int, expected: int) -> str:
    if expected == 0 and staged == 0:
        return "proposal expects no billed sales actuals"
    if staged > expected:
        return f"{MISMATCHED_BILLED}: {staged} staged for {expected} expected"
    return f"waiting for {expected - staged} of {expected} billed sales actuals"


def _plan_proposal(
    header: ProposalHeader,
    billed: Sequence[StagingRow],
    staged: Sequence[StagingRow],
    setups: Mapping[str, LegalEntitySetup],
    rates: Mapping[str, ContractFixedRate],
    row_reasons: dict[str, str],
) -> tuple[tuple[ProposalLine, ...], str | None]:
    """Lines for one open proposal, or why it waits; records row-level reasons."""
    problems: list[str] = []
    for row in billed:
        problem = _row_problem(row, setups, rates)
        if problem is None and row.legal_entity != header.legal_entity:
            problem = (
                f"legal entity {row.legal_entity} of actual {row.actual_id} differs from "
                f"proposal {header.proposal_id}'s {header.legal_entity}"
            )
        if problem is None and row.currency != header.currency:
            problem = (
                f"currency {row.currency} of actual {row.actual_id} differs from "
                f"proposal {header.proposal_id}'s {header.currency}"
            )
        if problem is not None:
            row_reasons[row.actual_id] = problem
            problems.append(problem)

    if len(billed) != header.expected_billed_lines:
        return (), _count_reason(len(billed), header.expected_billed_lines)
    if problems:
        return (), problems[0]

    setup = setups[header.legal_entity]
    accrued_rates: dict[str, Decimal | None] = {}
    unbilled_rows = UnbilledIndex(staged)
    for row in billed:
        accrued_rates[row.actual_id] = None
        if not row.needs_posted_unbilled:
            continue
        matches = unbilled_rows.matches(row)
        if not matches:
            which = row.unbilled_actual_id or "(matched by contract line, quantity and amount)"
            return (), (
                f"{NOT_POSTED_YET}: unbilled actual {which} "
                f"of billed actual {row.actual_id} is not in staging"
            )
        unposted = [m for m in matches if m.accounting is None]
        if unposted:
            return (), (
                f"{NOT_POSTED_YET}: unbilled actual {unposted[0].actual_id} "
                f"of billed actual {row.actual_id} is not posted through the integration journal"
            )
        unbilled = max(matches, key=lambda m: (m.accounting_date, m.actual_id))
        if unbilled.accounting is not None and unbilled.billing_type is BillingType.CHARGEABLE:
            # Only chargeable unbilled sales were accrued as WIP (see post_integration_journal).
            accrued_rates[row.actual_id] = unbilled.accounting.exchange_rate

    ordered = sorted(
        billed, key=lambda r: (r.contract_line_id or "", r.accounting_date, r.actual_id)
    )
    lines = tuple(
        ProposalLine(
            proposal_id=header.proposal_id,
            line_number=number,
            actual_id=row.actual_id,
            transaction_class=row.transaction_class,
            billing_type=row.billing_type,
            line_property=line_property_for(setup, row.billing_type),
            quantity=row.quantity,
            amount=row.amount,
            currency=row.currency,
            project_id=row.project_id,
            contract_line_id=row.contract_line_id,
            unbilled_actual_id=row.unbilled_actual_id,
            accrued_wip_rate=accrued_rates[row.actual_id],
        )
        for number, row in enumerate(ordered, start=1)
    )
    return lines, None


# --- vouchers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerEntry:
    """One ledger entry; `amount` in accounting currency, debit positive, credit negative."""

    account: str
    amount: Decimal
    actual_id: str | None = None

    @property
    def debit(self) -> Decimal:
        """The debit side (0 for a credit entry)."""
        return self.amount if self.amount > 0 else Decimal("0.00")

    @property
    def credit(self) -> Decimal:
        """The credit side as a positive number (0 for a debit entry)."""
        return -self.amount if self.amount < 0 else Decimal("0.00")


@dataclass(frozen=True)
class Voucher:
    """A posted voucher; construction refuses entries that do not balance to zero."""

    voucher: str
    legal_entity: str
    accounting_date: date
    currency: str
    entries: tuple[LedgerEntry, ...]

    def __post_init__(self) -> None:
        if self.balance != 0:
            raise UnbalancedVoucher(f"voucher {self.voucher} is off by {self.balance}")

    @property
    def balance(self) -> Decimal:
        """Sum of the entries: always zero for a constructed voucher."""
        return sum((e.amount for e in self.entries), Decimal("0.00"))

    def total(self, account: str) -> Decimal:
        """Signed sum of the entries on `account`."""
        return sum((e.amount for e in self.entries if e.account == account), Decimal("0.00"))


def _pair(
    debit_account: str, credit_account: str, amount: Decimal, actual_id: str
) -> list[LedgerEntry]:
    """Debit one account and credit another by `amount`; nothing for a zero amount."""
    if amount == 0:
        return []
    return [
        LedgerEntry(debit_account, amount, actual_id),
        LedgerEntry(credit_account, -amount, actual_id),
    ]


# --- posting an integration journal -----------------------------------------------------------


@dataclass(frozen=True)
class PostedJournal:
    """Result of posting an integration journal: one voucher and one stamp per line."""

    journal: IntegrationJournal
    vouchers: tuple[Voucher, ...]
    stamps: tuple[AccountingStamp, ...]


def post_integration_journal(
    journal: IntegrationJournal,
    setup: LegalEntitySetup,
    voucher_numbers: Sequence[str],
    fixed_contract_rates: Mapping[str, ContractFixedRate] | None = None,
) -> PostedJournal:
    """Post an integration journal (project accountant), one voucher per line.

    Cost: debit WIP – cost, credit Accrued cost. Chargeable unbilled sales: debit WIP – sales
    value, credit Accrued revenue. Non-chargeable and complimentary unbilled sales accrue no
    revenue, so their voucher has no entries, but the row is still stamped as posted. Amounts are
    converted with the rate fixed at import, unless the line's contract has a fixed rate now
    (set after the import): every posting for such a contract uses it (domain rule 5). Each
    line's date goes through the closed-period rule.
    """
    if journal.posted:
        raise AlreadyPosted(f"integration journal {journal.journal_id} is already posted")
    if journal.legal_entity != setup.legal_entity_id:
        raise FinanceRuleError(
            f"journal {journal.journal_id} belongs to legal entity {journal.legal_entity}, "
            f"not {setup.legal_entity_id}"
        )
    if len(voucher_numbers) != len(journal.lines):
        raise ValueError(
            f"journal {journal.journal_id} has {len(journal.lines)} lines but "
            f"{len(voucher_numbers)} voucher numbers were given"
        )
    # Resolve every date first, so a closed period refuses the whole journal and nothing posts.
    dates = [resolve_accounting_date(setup, line.accounting_date) for line in journal.lines]

    contract_rates = fixed_contract_rates or {}
    vouchers: list[Voucher] = []
    stamps: list[AccountingStamp] = []
    for line, number, voucher_date in zip(journal.lines, voucher_numbers, dates, strict=True):
        applied = _journal_line_rate(line, setup, contract_rates.get(line.contract_id or ""))
        amount = to_accounting(line.amount, applied.rate)
        if line.transaction_type is TransactionType.COST:
            entries = _pair(ACCOUNT_WIP_COST, ACCOUNT_ACCRUED_COST, amount, line.actual_id)
        elif line.billing_type is BillingType.CHARGEABLE:
            entries = _pair(
                ACCOUNT_WIP_SALES_VALUE, ACCOUNT_ACCRUED_REVENUE, amount, line.actual_id
            )
        else:
            entries = []
        vouchers.append(
            Voucher(
                number,
                setup.legal_entity_id,
                voucher_date,
                setup.accounting_currency,
                tuple(entries),
            )
        )
        stamps.append(
            AccountingStamp(
                line.actual_id,
                number,
                voucher_date,
                applied.rate,
                amount,
                Decimal("0.00"),
                applied.source,
            )
        )
    return PostedJournal(replace(journal, posted=True), tuple(vouchers), tuple(stamps))


def _journal_line_rate(
    line: JournalLine, setup: LegalEntitySetup, contract_rate: ContractFixedRate | None
) -> AppliedRate:
    """A contract's fixed rate if it has one now, else the rate the import fixed on the line."""
    if contract_rate is not None and contract_rate.applies_to(setup, line.currency):
        return AppliedRate(contract_rate.rate, RateSource.CONTRACT_FIXED_RATE)
    source = line.exchange_rate_source
    if source is None:  # a line imported before Finance recorded the source
        same = line.currency == setup.accounting_currency
        source = RateSource.SAME_CURRENCY if same else RateSource.EXCHANGE_RATE_TABLE
    return AppliedRate(line.exchange_rate, source)


# --- posting a proposal -----------------------------------------------------------------------


@dataclass(frozen=True)
class CustomerInvoice:
    """A posted customer invoice; it equals its proposal in amount and currency."""

    invoice_number: str
    proposal_id: str
    legal_entity: str
    customer_id: str
    invoice_date: date
    currency: str
    net_amount: Decimal
    tax_amount: Decimal
    total_amount: Decimal
    exchange_rate: Decimal
    accounting_currency: str
    total_accounting_amount: Decimal
    voucher: str
    exchange_rate_source: RateSource | None = None


@dataclass(frozen=True)
class PostedProposal:
    """Result of posting a proposal: the header (posted), invoice, voucher and row stamps."""

    header: ProposalHeader
    invoice: CustomerInvoice
    voucher: Voucher
    stamps: tuple[AccountingStamp, ...]


def distribute_tax(tax: Decimal, lines: Sequence[ProposalLine]) -> dict[str, Decimal]:
    """Proposal tax per line (by actual id), proportional to chargeable amounts.

    Each share is rounded to cents; the last chargeable line takes the remainder so the shares
    sum to `tax` exactly. Non-chargeable lines carry no tax.
    """
    shares = {line.actual_id: Decimal("0.00") for line in lines}
    chargeable = [line for line in lines if line.chargeable]
    if not chargeable or tax == 0:
        return shares
    base = sum((line.amount for line in chargeable), Decimal("0.00"))
    allotted = Decimal("0.00")
    for line in chargeable[:-1]:
        share = (
            (tax * line.amount / base).quantize(CENT, rounding=ROUND_HALF_UP)
            if base != 0
            else Decimal("0.00")
        )
        shares[line.actual_id] = share
        allotted += share
    shares[chargeable[-1].actual_id] = tax - allotted
    return shares


def post_proposal(
    header: ProposalHeader,
    lines: Sequence[ProposalLine],
    setup: LegalEntitySetup,
    posting_date: date,
    invoice_number: str,
    voucher_number: str,
    fixed_contract_rates: Mapping[str, ContractFixedRate] | None = None,
) -> PostedProposal:
    """Post a proposal as a customer invoice (receivables clerk); domain flow step 9.

    Ledger, in accounting currency at the rate on the accounting date (or the contract's fixed
    rate): debit Accounts receivable by the total incl. tax, credit Revenue – project per
    chargeable line, credit Sales tax payable; for lines whose unbilled sales were accrued, debit
    Accrued revenue and credit WIP – sales value by the line amount at the accrual's rate. A credit
    (negative) proposal gives the mirror entries. The voucher balances to zero.
    """
    if header.status is ProposalStatus.POSTED:
        raise AlreadyPosted(
            f"proposal {header.proposal_id} is already posted as invoice {header.invoice_number}"
        )
    if header.legal_entity != setup.legal_entity_id:
        raise FinanceRuleError(
            f"proposal {header.proposal_id} belongs to legal entity {header.legal_entity}, "
            f"not {setup.legal_entity_id}"
        )
    own_lines = [line for line in lines if line.proposal_id == header.proposal_id]
    if header.status is not ProposalStatus.LINES_IMPORTED or not own_lines:
        reason = header.waiting_reason or "import from staging has not made its lines"
        raise ProposalNotReady(
            f"proposal {header.proposal_id} has no lines: waiting reason: {reason}"
        )
    if any(line.currency != header.currency for line in own_lines):
        raise FinanceRuleError(
            f"proposal {header.proposal_id} has lines in a currency other than {header.currency}"
        )

    accounting_date = resolve_accounting_date(setup, posting_date)
    fixed = (fixed_contract_rates or {}).get(header.contract_id)
    applied = applied_rate(setup, header.currency, accounting_date, fixed)
    rate = applied.rate
    totals = proposal_totals(header, own_lines)
    tax_shares = distribute_tax(header.tax_amount, own_lines)

    entries: list[LedgerEntry] = []
    stamps: list[AccountingStamp] = []
    revenue_total = Decimal("0.00")
    for line in own_lines:
        line_accounting = to_accounting(line.amount, rate)
        if line.chargeable and line_accounting != 0:
            entries.append(LedgerEntry(ACCOUNT_REVENUE, -line_accounting, line.actual_id))
            revenue_total += line_accounting
        if line.accrued_wip_rate is not None:
            # Reverse exactly what the journal accrued for this amount, at the accrual's rate;
            # any exchange difference then stays in revenue, and this pair balances on its own.
            wip = to_accounting(line.amount, line.accrued_wip_rate)
            entries += _pair(ACCOUNT_ACCRUED_REVENUE, ACCOUNT_WIP_SALES_VALUE, wip, line.actual_id)
        stamps.append(
            AccountingStamp(
                line.actual_id,
                voucher_number,
                accounting_date,
                rate,
                line_accounting,
                tax_shares[line.actual_id],
                applied.source,
            )
        )
    tax_accounting = to_accounting(header.tax_amount, rate)
    if tax_accounting != 0:
        entries.append(LedgerEntry(ACCOUNT_SALES_TAX_PAYABLE, -tax_accounting))
    # Receivable is the sum of what was credited, so the voucher balances to the cent.
    receivable = revenue_total + tax_accounting
    entries.insert(0, LedgerEntry(ACCOUNT_RECEIVABLE, receivable))

    voucher = Voucher(
        voucher_number,
        setup.legal_entity_id,
        accounting_date,
        setup.accounting_currency,
        tuple(entries),
    )
    invoice = CustomerInvoice(
        invoice_number=invoice_number,
        proposal_id=header.proposal_id,
        legal_entity=header.legal_entity,
        customer_id=header.customer_id,
        invoice_date=accounting_date,
        currency=header.currency,
        net_amount=totals.net_amount,
        tax_amount=totals.tax_amount,
        total_amount=totals.total_amount,
        exchange_rate=rate,
        accounting_currency=setup.accounting_currency,
        total_accounting_amount=receivable,
        voucher=voucher_number,
        exchange_rate_source=applied.source,
    )
    posted = replace(
        header, status=ProposalStatus.POSTED, invoice_number=invoice_number, waiting_reason=None
    )
    return PostedProposal(posted, invoice, voucher, tuple(stamps))


# --- one-way rule -----------------------------------------------------------------------------


def refuse_proposal_create(proposal_id: str) -> NoReturn:
    """Creating a proposal directly in Finance is refused (domain rule 1)."""
    raise OneWayViolation(f"cannot create proposal {proposal_id} in Finance: {ONE_WAY_MESSAGE}")


def refuse_proposal_delete(proposal_id: str) -> NoReturn:
    """Deleting a proposal directly in Finance is refused (domain rule 1)."""
    raise OneWayViolation(f"cannot delete proposal {proposal_id} in Finance: {ONE_WAY_MESSAGE}")


def refuse_proposal_rekey(proposal_id: str, new_proposal_id: str) -> NoReturn:
    """Changing a proposal's number in Finance is refused (domain rule 1)."""
    raise OneWayViolation(
        f"cannot re-key proposal {proposal_id} to {new_proposal_id} in Finance: {ONE_WAY_MESSAGE}"
    )


# --- header edits made in Finance ---------------------------------------------------------------

# The proposal header fields Finance owns: the only ones an edit in Finance may change.
EDITABLE_HEADER_FIELDS = ("sales_tax_group", "payment_terms")


def edit_proposal_header(
    proposal_id: str,
    status: ProposalStatus,
    invoice_number: str | None,
    current: Mapping[str, str | None],
    requested: Mapping[str, str | None],
    new_proposal_id: str | None = None,
) -> dict[str, str | None]:
    """The header fields a Finance edit changes: those `requested` whose value differs from
    `current` (an edit that changes nothing changes nothing).

    Refused, nothing changed: re-keying the proposal (`new_proposal_id` other than its own,
    domain rule 1), and any edit of a posted proposal, whose header is read-only. The change
    stays in Finance: it never travels back to Dataverse (domain rule 2).
    """
    if new_proposal_id is not None and new_proposal_id != proposal_id:
        refuse_proposal_rekey(proposal_id, new_proposal_id)
    if status == ProposalStatus.POSTED:
        raise FinanceRuleError(
            f"proposal {proposal_id} is posted as invoice {invoice_number}: its header is read-only"
        )
    unknown = sorted(set(requested) - set(EDITABLE_HEADER_FIELDS))
    if unknown:
        raise FinanceRuleError(f"header fields {unknown} are not Finance's to edit")
    return {
        name: requested[name]
        for name in EDITABLE_HEADER_FIELDS
        if name in requested and requested[name] != current[name]
    }
