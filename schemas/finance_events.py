"""Events Finance publishes: posting results and (refused by the bridge) header changes."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


class ActualAccounting(BaseModel):
    """Accounting detail stamped on one staged actual at posting."""

    model_config = ConfigDict(frozen=True)

    actual_id: UUID
    voucher: str
    voucher_date: date
    exchange_rate: Decimal
    accounting_currency_amount: Decimal
    tax_amount: Decimal = Decimal("0")


class InvoicePosted(BaseModel):
    """`invoice-posted`: a proposal became a customer invoice."""

    model_config = ConfigDict(frozen=True)

    invoice_id: UUID
    legal_entity: str
    customer_invoice_number: str
    voucher: str
    posting_date: date
    total_amount: Decimal
    currency: str
    actuals: list[ActualAccounting] = Field(min_length=1)


class JournalPosted(BaseModel):
    """`journal-posted`: an integration journal's cost and unbilled-sales lines were posted."""

    model_config = ConfigDict(frozen=True)

    journal_id: str
    legal_entity: str
    voucher: str
    posting_date: date
    actuals: list[ActualAccounting] = Field(min_length=1)


class ProposalHeaderChanged(BaseModel):
    """`proposal-header-changed`: Finance edited a proposal header (e.g. its sales tax group).

    The proposal map is one way; the bridge refuses to carry this to Dataverse and logs it.
    """

    model_config = ConfigDict(frozen=True)

    invoice_id: UUID
    legal_entity: str
    changed_fields: dict[str, str]
