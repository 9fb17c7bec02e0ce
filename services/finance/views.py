"""How Finance's records look over HTTP: one response model per record, built from a stored row.

The models are the API's contract (every Finance route declares one, so its OpenAPI page
documents what it returns). Amounts, quantities and rates are `Decimal`, which pydantic renders
as strings, as Dataverse's API does, so that no client reads them through a float. A model
lists the columns of its table one by one: `tests/integration/finance/test_views.py` fails when
a column is added without its field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

import asyncpg
from pydantic import BaseModel, Field

from schemas.vocabulary import BillingMethod, BillingType, TransactionClass, TransactionType
from services.finance.commands import StoredFixedRate
from services.finance.domain import LegalEntitySetup, ProposalStatus, RateSource
from services.finance.importer import ImportSummary
from services.finance.posting import JournalPosting

# A row as asyncpg returns it, or any mapping with the same keys.
Row = asyncpg.Record | Mapping[str, Any]

RATE_SOURCE = "why the posting used its exchange rate (null until posted)"

# --- legal entity setup ---------------------------------------------------------------------------


class ExchangeRateOut(BaseModel):
    """`rate` accounting-currency units per `from_currency` unit from `valid_from` on."""

    from_currency: str
    to_currency: str
    valid_from: date
    rate: Decimal


class FiscalPeriodOut(BaseModel):
    """A monthly fiscal period and whether it is closed."""

    period: str = Field(description="YYYY-MM")
    closed: bool


class LegalEntityOut(BaseModel):
    """A legal entity with its setup: line properties, exchange rates, fiscal periods."""

    legal_entity_id: str
    accounting_currency: str
    move_to_next_open_period: bool
    line_properties: dict[BillingType, str] = Field(description="billing type -> line property")
    exchange_rates: list[ExchangeRateOut]
    fiscal_periods: list[FiscalPeriodOut]


def legal_entity_out(setup: LegalEntitySetup) -> LegalEntityOut:
    """A legal entity's setup as the API shows it (mapping and rates in a stable order)."""
    return LegalEntityOut(
        legal_entity_id=setup.legal_entity_id,
        accounting_currency=setup.accounting_currency,
        move_to_next_open_period=setup.move_to_next_open_period,
        line_properties=dict(sorted(setup.line_properties.items())),
        exchange_rates=[
            ExchangeRateOut(
                from_currency=r.from_currency,
                to_currency=r.to_currency,
                valid_from=r.valid_from,
                rate=r.rate,
            )
            for r in sorted(
                setup.exchange_rates, key=lambda r: (r.from_currency, r.to_currency, r.valid_from)
            )
        ],
        fiscal_periods=[
            FiscalPeriodOut(period=p.name, closed=p.closed) for p in setup.fiscal_periods
        ],
    )


# --- contracts' fixed exchange rates --------------------------------------------------------------


class ContractFixedRateOut(BaseModel):
    """A contract's fixed rate as Finance holds it."""

    contract_id: UUID
    legal_entity: str
    contract_currency: str
    accounting_currency: str
    rate: Decimal = Field(description="as a string, so that no client reads it through a float")
    contract_seen: bool = Field(
        description="whether Finance has a proposal or staged row of the contract yet; a rate "
        "set before is kept and applies when the first one arrives"
    )
    updated_at: datetime


def fixed_rate_out(stored: StoredFixedRate) -> ContractFixedRateOut:
    """A contract's fixed rate as the API shows it."""
    fixed = stored.fixed
    return ContractFixedRateOut(
        contract_id=UUID(fixed.contract_id),
        legal_entity=fixed.legal_entity,
        contract_currency=fixed.contract_currency,
        accounting_currency=fixed.accounting_currency,
        rate=fixed.rate,
        contract_seen=stored.contract_seen,
        updated_at=stored.updated_at,
    )


# --- staging, refused records, import -------------------------------------------------------------


class StagingRowOut(BaseModel):
    """A staged actual (`msdyn_actual` in Finance's actuals staging), with why it is not
    imported, and its accounting detail once posted."""

    actual_id: UUID
    legal_entity: str
    transaction_type: TransactionType
    transaction_class: TransactionClass
    billing_type: BillingType | None
    billing_method: BillingMethod | None
    quantity: Decimal
    price: Decimal
    amount: Decimal
    currency: str
    document_date: date
    accounting_date: date
    project_id: UUID
    contract_id: UUID | None
    contract_line_id: UUID | None
    customer_id: UUID | None
    resource: str | None
    resource_category: str | None
    invoice_id: UUID | None
    unbilled_actual_id: UUID | None
    reverses_actual_id: UUID | None
    status: Literal["valid", "invalid"]
    imported: bool
    imported_at: datetime | None
    import_reason: str | None = Field(description="what the last import said of the row")
    journal_id: str | None
    proposal_id: UUID | None
    voucher: str | None
    voucher_date: date | None
    exchange_rate: Decimal | None
    accounting_currency_amount: Decimal | None
    tax_amount: Decimal | None
    received_at: datetime
    updated_at: datetime
    exchange_rate_source: RateSource | None = Field(description=RATE_SOURCE)
    invalid_reason: str | None = Field(description="why the row is invalid (null when valid)")
    reason: str | None = Field(
        description="why the row is not (yet) imported: `invalid_reason`, else `import_reason`"
    )


def staging_out(record: Row) -> StagingRowOut:
    """A staged actual; the stored `reason` (set only on an invalid row) becomes
    `invalid_reason`, and `reason` says why the row is not imported, whatever the cause."""
    invalid_reason = record["reason"] if record["status"] == "invalid" else None
    return StagingRowOut.model_validate(
        {
            **record,
            "invalid_reason": invalid_reason,
            "reason": invalid_reason or record["import_reason"],
        }
    )


class StagingCount(BaseModel):
    """How many staged actuals match, and when the latest of them arrived."""

    count: int
    last_received_at: datetime | None = Field(
        description="When Finance received the latest matching row (null when none match)"
    )


class RefusedRecordOut(BaseModel):
    """A record Finance refused (e.g. an unknown legal entity), kept with its reason until a
    re-send is applied (domain rule 8)."""

    topic: str
    record_key: str
    reason: str
    payload: dict[str, Any] = Field(description="the record as it arrived")
    refused_at: datetime
    attempts: int


class ImportSummaryOut(BaseModel):
    """What one import run did, and what it left out and why."""

    journal_lines_created: int
    journals_created: list[str]
    proposals_with_lines: list[str]
    waiting: dict[str, str] = Field(description="proposal id -> why it still has no lines")
    rows_not_imported: dict[str, str] = Field(description="actual id -> why it is not imported")


def import_summary_out(summary: ImportSummary) -> ImportSummaryOut:
    """An import run's summary as the API shows it."""
    return ImportSummaryOut.model_validate(summary, from_attributes=True)


# --- integration journals -------------------------------------------------------------------------


class JournalLineOut(BaseModel):
    """A line of an integration journal: one cost or unbilled-sales actual."""

    journal_id: str
    line_number: int
    actual_id: UUID
    transaction_type: TransactionType
    transaction_class: TransactionClass
    billing_type: BillingType
    line_property: str
    quantity: Decimal
    amount: Decimal
    currency: str
    accounting_date: date
    exchange_rate: Decimal
    project_id: UUID
    contract_id: UUID | None
    voucher: str | None
    exchange_rate_source: RateSource | None = Field(description=RATE_SOURCE)


class JournalOut(BaseModel):
    """An integration journal header."""

    journal_id: str
    legal_entity: str
    period_start: date
    status: Literal["draft", "posted", "error"]
    error_reason: str | None = Field(description="why the last posting was refused")
    created_at: datetime
    posted_at: datetime | None
    line_count: int


class JournalDetailOut(JournalOut):
    """An integration journal with its lines."""

    lines: list[JournalLineOut]


def journal_out(record: Row, lines: Sequence[Row]) -> JournalDetailOut:
    """A journal header with its lines."""
    return JournalDetailOut.model_validate(
        {**record, "lines": [dict(line) for line in lines], "line_count": len(lines)}
    )


class JournalPostingOut(BaseModel):
    """A posted integration journal: one voucher per line."""

    journal_id: str
    legal_entity: str
    status: Literal["posted"] = "posted"
    lines: int
    vouchers: list[str]


def journal_posting_out(posting: JournalPosting) -> JournalPostingOut:
    """A journal posting as the API shows it."""
    return JournalPostingOut.model_validate(posting, from_attributes=True)


# --- proposals ------------------------------------------------------------------------------------


class ProposalLineOut(BaseModel):
    """A proposal line: one staged billed-sales actual of the invoice (domain rule 3)."""

    proposal_id: UUID
    line_number: int
    actual_id: UUID
    transaction_class: TransactionClass
    billing_type: BillingType
    line_property: str
    quantity: Decimal
    amount: Decimal
    currency: str
    project_id: UUID
    contract_line_id: UUID | None
    unbilled_actual_id: UUID | None
    accrued_wip_rate: Decimal | None


class ProposalOut(BaseModel):
    """A project invoice proposal header as Dataverse confirmed it, with what Finance did
    with it (status, waiting reason, invoice number, Finance-owned fields)."""

    proposal_id: UUID
    legal_entity: str
    customer_id: UUID
    contract_id: UUID
    currency: str
    invoice_date: date
    proposal_total: Decimal
    sales_tax_amount: Decimal
    payment_terms: str | None
    invoice_address: dict[str, Any] | None
    expected_billed_lines: int
    is_corrective: bool
    corrected_proposal_id: UUID | None
    sales_tax_group: str | None
    status: ProposalStatus
    waiting_reason: str | None = Field(description="why the proposal has no lines yet")
    invoice_number: str | None = Field(description="the customer invoice, once posted")
    received_at: datetime
    updated_at: datetime
    total_amount: Decimal = Field(description="ProposalTotal, as Dataverse confirmed it")
    tax_amount: Decimal = Field(description="SalesTaxAmount, as Dataverse confirmed it")


class ProposalDetailOut(ProposalOut):
    """A proposal header with its lines."""

    lines: list[ProposalLineOut]
    lines_amount: Decimal = Field(description="sum of the chargeable lines' amounts")


def _proposal_fields(record: Row) -> dict[str, Any]:
    return {
        **record,
        "total_amount": record["proposal_total"],
        "tax_amount": record["sales_tax_amount"],
    }


def proposal_out(record: Row) -> ProposalOut:
    """A proposal header."""
    return ProposalOut.model_validate(_proposal_fields(record))


def proposal_detail_out(record: Row, lines: Sequence[Row]) -> ProposalDetailOut:
    """A proposal header with its lines and their chargeable sum."""
    chargeable = (line["amount"] for line in lines if line["billing_type"] == "chargeable")
    return ProposalDetailOut.model_validate(
        {
            **_proposal_fields(record),
            "lines": [dict(line) for line in lines],
            "lines_amount": sum(chargeable, Decimal("0")),
        }
    )


# --- posted documents -----------------------------------------------------------------------------


class CustomerInvoiceOut(BaseModel):
    """A posted customer invoice: the proposal it came from, its amounts in the invoice
    currency and in the legal entity's accounting currency, and its voucher."""

    invoice_number: str
    proposal_id: UUID
    legal_entity: str
    customer_id: UUID
    invoice_date: date
    currency: str
    net_amount: Decimal
    tax_amount: Decimal
    total_amount: Decimal
    exchange_rate: Decimal
    accounting_currency: str
    total_accounting_amount: Decimal
    voucher: str
    posted_at: datetime
    exchange_rate_source: RateSource | None = Field(description=RATE_SOURCE)


class VoucherEntryOut(BaseModel):
    """A ledger entry: debit positive, credit negative, in the accounting currency."""

    voucher: str
    entry_number: int
    account: str
    amount: Decimal
    actual_id: UUID | None


class LedgerEntryOut(VoucherEntryOut):
    """A ledger entry with its voucher's legal entity, date and currency."""

    legal_entity: str
    accounting_date: date
    currency: str


class VoucherOut(BaseModel):
    """A voucher with its ledger entries and their balance (always zero)."""

    voucher: str
    legal_entity: str
    accounting_date: date
    currency: str
    source_type: Literal["integration_journal", "customer_invoice"]
    source_id: str = Field(description="the journal id or the customer invoice number")
    posted_at: datetime
    entries: list[VoucherEntryOut]
    balance: Decimal


def voucher_out(record: Row, entries: Sequence[Row]) -> VoucherOut:
    """A voucher with its ledger entries and their balance."""
    return VoucherOut.model_validate(
        {
            **record,
            "entries": [dict(e) for e in entries],
            "balance": sum((e["amount"] for e in entries), Decimal("0")),
        }
    )
