"""Records the bridge writes, named as the target entity names them (see bridge table maps).

`fo-invoice-proposals` carries Finance's project invoice proposal header (data-entity names);
`fo-actuals-staging` rows of Finance's actuals staging table and `dv-actuals-accounting` the
accounting detail for Dataverse actuals (both `msdyn_` names), a run of records per message,
each with the bridge's record id. Option-set values arrive as the labels the table map's value
maps produce (e.g. "BilledSales").
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any, Generic, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

TransactionTypeOption = Literal["Cost", "UnbilledSales", "BilledSales"]
TransactionClassOption = Literal["Time", "Expense", "Material", "Milestone", "Fee"]
BillingTypeOption = Literal["Chargeable", "NonChargeable", "Complimentary"]
BillingMethodOption = Literal["TimeAndMaterial", "FixedPrice"]

R = TypeVar("R", bound=BaseModel)


class ProposalHeaderRecord(BaseModel):
    """`fo-invoice-proposals`: a project invoice proposal header for Finance."""

    model_config = ConfigDict(frozen=True)

    ProposalId: UUID
    DataAreaId: str = Field(min_length=1)
    InvoiceAccount: UUID
    ContractId: UUID
    CurrencyCode: str = Field(min_length=3, max_length=3)
    InvoiceDate: date
    ProposalTotal: Decimal
    SalesTaxAmount: Decimal
    PaymentTerms: str | None = None
    InvoiceAddress: dict[str, Any] | None = None
    ExpectedBilledLines: int = Field(ge=0)
    IsCorrective: bool = False
    CorrectedProposalId: UUID | None = None


class StagingActualRecord(BaseModel):
    """`fo-actuals-staging`: one actual for Finance's actuals staging table."""

    model_config = ConfigDict(frozen=True)

    msdyn_actualid: UUID
    msdyn_transactiontype: TransactionTypeOption
    msdyn_transactionclassification: TransactionClassOption
    msdyn_billingtype: BillingTypeOption | None = None
    msdyn_quantity: Decimal
    msdyn_price: Decimal
    msdyn_amount: Decimal
    msdyn_transactioncurrency: str = Field(min_length=3, max_length=3)
    msdyn_documentdate: date
    msdyn_accountingdate: date
    msdyn_legalentity: str = Field(min_length=1)
    msdyn_project: UUID
    msdyn_contract: UUID | None = None
    msdyn_contractline: UUID | None = None
    msdyn_customer: UUID | None = None
    msdyn_bookableresource: str | None = None
    msdyn_resourcecategory: str | None = None
    msdyn_invoice: UUID | None = None
    msdyn_billingmethod: BillingMethodOption | None = None
    msdyn_unbilledactual: UUID | None = None
    msdyn_reversedactual: UUID | None = None


class ActualAccountingRecord(BaseModel):
    """`dv-actuals-accounting`: accounting detail Finance stamped on one actual."""

    model_config = ConfigDict(frozen=True)

    msdyn_actualid: UUID
    msdyn_externalreference: str
    msdyn_externalreferencedate: date
    msdyn_exchangerate: Decimal
    msdyn_amountaccountingcurrency: Decimal
    msdyn_salestaxamount: Decimal | None = None


class BridgeRecord(BaseModel, Generic[R]):
    """One mapped record in a message that carries several, with the bridge's record id.

    The target answers each record on `sync-receipts` by `record_id` (the receipt's
    `source_event_id`); every re-send of the record carries the same id.
    """

    model_config = ConfigDict(frozen=True)

    record_id: UUID
    record: R


class StagingActualRecords(BaseModel):
    """`fo-actuals-staging`: a run of mapped actuals that share a message key (their invoice,
    else their project), in order.

    One message per run of the records one bridge transaction forwards, not one per actual,
    as dual-write writes a batch of rows to the staging table (and as `actuals-created` and
    `sync-receipts` carry runs).
    """

    model_config = ConfigDict(frozen=True)

    records: list[BridgeRecord[StagingActualRecord]] = Field(min_length=1)


class ActualAccountingRecords(BaseModel):
    """`dv-actuals-accounting`: a run of accounting details that share a message key (the
    posted invoice, else the journal's actual), in order; one message per run, as for staging.
    """

    model_config = ConfigDict(frozen=True)

    records: list[BridgeRecord[ActualAccountingRecord]] = Field(min_length=1)
