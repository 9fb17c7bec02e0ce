"""Option sets shared by both sides, named as in Dataverse and Finance (see domain.md)."""

from __future__ import annotations

from enum import StrEnum


class TransactionType(StrEnum):
    """`msdyn_transactiontype` of an actual."""

    COST = "cost"
    UNBILLED_SALES = "unbilled_sales"
    BILLED_SALES = "billed_sales"


class TransactionClass(StrEnum):
    """`msdyn_transactionclassification` of an actual."""

    TIME = "time"
    EXPENSE = "expense"
    MATERIAL = "material"
    MILESTONE = "milestone"
    FEE = "fee"


class BillingType(StrEnum):
    """`msdyn_billingtype`: only chargeable counts in invoice totals."""

    CHARGEABLE = "chargeable"
    NON_CHARGEABLE = "non_chargeable"
    COMPLIMENTARY = "complimentary"


class BillingStatus(StrEnum):
    """`msdyn_billingstatus` of an actual."""

    UNBILLED_SALES_CREATED = "unbilled_sales_created"
    CUSTOMER_INVOICE_CREATED = "customer_invoice_created"
    CUSTOMER_INVOICE_POSTED = "customer_invoice_posted"
    CANCELED = "canceled"


class AdjustmentStatus(StrEnum):
    """`msdyn_adjustmentstatus`: adjusted and unadjustable actuals can never be invoiced."""

    NONE = "none"
    ADJUSTED = "adjusted"
    UNADJUSTABLE = "unadjustable"


class BillingMethod(StrEnum):
    """Billing method of a project contract line."""

    TIME_AND_MATERIAL = "time_and_material"
    FIXED_PRICE = "fixed_price"


class MilestoneInvoiceStatus(StrEnum):
    """Invoice status of a fixed-price milestone."""

    NOT_READY = "not_ready"
    READY = "ready"
    CUSTOMER_INVOICE_CREATED = "customer_invoice_created"
    CUSTOMER_INVOICE_POSTED = "customer_invoice_posted"


class InvoiceStatus(StrEnum):
    """Status of a proforma invoice in Dataverse; confirmed is final."""

    DRAFT = "draft"
    IN_REVIEW = "in_review"
    CONFIRMED = "confirmed"
