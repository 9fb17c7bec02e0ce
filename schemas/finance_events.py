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
    """`invoice-posted`: a proposal became a customer invoice (key and correlation: invoice id).

    `total_amount` is in the invoice currency, net of nothing: chargeable lines plus tax. The
    optional amounts after `actuals` were added later; old producers did not send them.
    """

    model_config = ConfigDict(frozen=True)

    invoice_id: UUID
    legal_entity: str
    customer_invoice_number: str
    voucher: str
    posting_date: date
    total_amount: Decimal
    currency: str
    actuals: list[ActualAccounting] = Field(min_length=1)
    net_amount: Decimal | None = None
    tax_amount: Decimal | None = None
    exchange_rate: Decimal | None = None
    accounting_currency: str | None = None
    total_accounting_amount: Decimal | None = None


class JournalPosted(BaseModel):
    """`journal-posted`: one cost or unbilled-sales line of an integration journal was posted.

    Finance posts a journal with one voucher per line, so it publishes one event per line,
    keyed by the line's actual id (DESIGN.md): `voucher` and `posting_date` are that line's, and
    `actuals` holds that one actual. `line_number` and `journal_lines` (added later, optional)
    say which line of how many.
    """

    model_config = ConfigDict(frozen=True)

    journal_id: str
    legal_entity: str
    voucher: str
    posting_date: date
    actuals: list[ActualAccounting] = Field(min_length=1)
    line_number: int | None = None
    journal_lines: int | None = None


class ProposalHeaderChanged(BaseModel):
    """`proposal-header-changed`: Finance edited a proposal header (e.g. its sales tax group).

    The proposal map is one way; the bridge refuses to carry this to Dataverse and logs it.
    """

    model_config = ConfigDict(frozen=True)

    invoice_id: UUID
    legal_entity: str
    changed_fields: dict[str, str]
