"""Events Dataverse publishes: confirmed proforma headers and every new actual."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from schemas.vocabulary import (
    AdjustmentStatus,
    BillingMethod,
    BillingStatus,
    BillingType,
    TransactionClass,
    TransactionType,
)


class Address(BaseModel):
    """A postal address of the invoice customer."""

    street: str | None = None
    city: str | None = None
    postal_code: str | None = None
    country: str | None = None


class SourceTransaction(BaseModel):
    """The Dataverse transaction an event belongs to, on every message of it.

    A transaction can span several messages (an invoice's header, then its actuals in runs of
    up to 500); dual-write's limits are per transaction, so each message says which one it is
    part of and how big the whole is. `records`: the rows it gives to dual-write (headers and
    actuals not flagged skip sync); `legal_entities`: the distinct legal entities of those rows.
    Optional: a producer that does not send it makes each message a transaction of its own.
    """

    model_config = ConfigDict(frozen=True)

    transaction_id: UUID
    records: int = Field(ge=0)
    legal_entities: int = Field(ge=0)


class SnapshotMark(BaseModel):
    """On a message Dataverse publishes for an initial sync rather than a live change: the
    snapshot it answers and how many rows the snapshot holds for the map in all (so the bridge
    knows when it has received the whole copy, whatever partitions the rows travelled on)."""

    model_config = ConfigDict(frozen=True)

    snapshot_id: UUID
    rows: int = Field(ge=0)


class InvoiceConfirmed(BaseModel):
    """`invoice-confirmed`: a confirmed proforma's header, what Finance's proposal is made of."""

    model_config = ConfigDict(frozen=True)

    invoice_id: UUID
    invoice_number: str | None = None
    legal_entity: str = Field(min_length=1)
    customer_id: UUID
    customer_name: str | None = None
    contract_id: UUID
    billing_method: BillingMethod | None = None
    currency: str = Field(min_length=3, max_length=3)
    invoice_date: date
    total_amount: Decimal
    tax_amount: Decimal = Decimal("0")
    payment_terms: str | None = None
    invoice_address: Address | None = None
    expected_billed_lines: int = Field(ge=0)
    is_corrective: bool = False
    corrects_invoice_id: UUID | None = None
    transaction: SourceTransaction | None = None
    snapshot: SnapshotMark | None = None


class ActualCreated(BaseModel):
    """One new `msdyn_actual`, skip-sync ones included (an element of `ActualsCreated`)."""

    model_config = ConfigDict(frozen=True)

    actual_id: UUID
    transaction_type: TransactionType
    transaction_class: TransactionClass
    billing_type: BillingType | None = None
    billing_status: BillingStatus | None = None
    adjustment_status: AdjustmentStatus = AdjustmentStatus.NONE
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    currency: str = Field(min_length=3, max_length=3)
    document_date: date
    accounting_date: date
    legal_entity: str = Field(min_length=1)
    project_id: UUID
    contract_id: UUID | None = None
    contract_line_id: UUID | None = None
    billing_method: BillingMethod | None = None
    customer_id: UUID | None = None
    resource: str | None = None
    role: str | None = None
    invoice_id: UUID | None = None
    unbilled_actual_id: UUID | None = None
    reverses_actual_id: UUID | None = None
    skip_sync: bool = False


class ActualsCreated(BaseModel):
    """`actuals-created`: new actuals of one Dataverse transaction, in creation order, that
    share a message key (their invoice, else their project).

    One message per run of a transaction's actuals, not one per actual, as dual-write carries
    a transaction's rows in one batch: a 10,000-line invoice was 20,000 messages, and the
    bridge's stream spent more on reading them than on mapping them.
    """

    model_config = ConfigDict(frozen=True)

    actuals: list[ActualCreated] = Field(min_length=1)
    transaction: SourceTransaction | None = None
    snapshot: SnapshotMark | None = None
