"""The two table maps of the Project Operations invoice integration, as data.

Source field names are those of dwsim's events (snake_case); target field names follow the
entity on the other side: Finance data-entity names for the proposal header, `msdyn_` names for
the actuals staging table and for the accounting detail written back to Dataverse actuals.
Topic names are the base names of DESIGN.md; the handler adds the configured prefix.
"""

from __future__ import annotations

from typing import Final

from schemas.vocabulary import BillingMethod, BillingType, TransactionClass, TransactionType
from services.bridge.domain import (
    AlertRule,
    default_alert_rule,
)
from services.bridge.mapping import (
    Direction,
    Explode,
    FieldMapping,
    FieldNotTrue,
    MapLeg,
    TableMap,
)

# Option sets: dwsim's vocabulary value -> the option label the staging table stores.
TRANSACTION_TYPE_OPTIONS: Final[dict[str, str]] = {
    TransactionType.COST: "Cost",
    TransactionType.UNBILLED_SALES: "UnbilledSales",
    TransactionType.BILLED_SALES: "BilledSales",
}
TRANSACTION_CLASS_OPTIONS: Final[dict[str, str]] = {
    TransactionClass.TIME: "Time",
    TransactionClass.EXPENSE: "Expense",
    TransactionClass.MATERIAL: "Material",
    TransactionClass.MILESTONE: "Milestone",
    TransactionClass.FEE: "Fee",
}
BILLING_TYPE_OPTIONS: Final[dict[str, str]] = {
    BillingType.CHARGEABLE: "Chargeable",
    BillingType.NON_CHARGEABLE: "NonChargeable",
    BillingType.COMPLIMENTARY: "Complimentary",
}
BILLING_METHOD_OPTIONS: Final[dict[str, str]] = {
    BillingMethod.TIME_AND_MATERIAL: "TimeAndMaterial",
    BillingMethod.FIXED_PRICE: "FixedPrice",
}


def _optional(source: str, target: str) -> FieldMapping:
    return FieldMapping(source, target, required=False)


PROPOSAL_MAP_NAME: Final = "Project invoice proposal V2 (invoices)"
ACTUALS_MAP_NAME: Final = "Project Operations integration actuals (msdyn_actuals)"

PROPOSAL_HEADER_LEG: Final = MapLeg(
    name="proposal header",
    direction=Direction.DATAVERSE_TO_FINANCE,
    source_topics=("invoice-confirmed",),
    target_topic="fo-invoice-proposals",
    field_mappings=(
        FieldMapping("invoice_id", "ProposalId"),
        FieldMapping("legal_entity", "DataAreaId"),
        FieldMapping("customer_id", "InvoiceAccount"),
        FieldMapping("contract_id", "ContractId"),
        FieldMapping("currency", "CurrencyCode"),
        FieldMapping("invoice_date", "InvoiceDate"),
        FieldMapping("total_amount", "ProposalTotal"),
        FieldMapping("tax_amount", "SalesTaxAmount"),
        _optional("payment_terms", "PaymentTerms"),
        _optional("invoice_address", "InvoiceAddress"),
        # How many billed-sales lines Dataverse confirmed: the import compares it with what
        # reached staging ("mismatched billed sales actuals").
        FieldMapping("expected_billed_lines", "ExpectedBilledLines"),
        FieldMapping("is_corrective", "IsCorrective"),
        _optional("corrects_invoice_id", "CorrectedProposalId"),
    ),
    # The proposal number is the proforma's invoice ID, which is also the topic key.
    integration_key=("ProposalId",),
)

PROPOSAL_MAP: Final = TableMap(name=PROPOSAL_MAP_NAME, version="1.0", legs=(PROPOSAL_HEADER_LEG,))

ACTUALS_TO_STAGING_LEG: Final = MapLeg(
    name="actuals to staging",
    direction=Direction.DATAVERSE_TO_FINANCE,
    source_topics=("actuals-created",),
    target_topic="fo-actuals-staging",
    # One message carries a run of a transaction's actuals; each becomes its own record.
    explode=Explode("actuals"),
    filter=(FieldNotTrue("skip_sync", reason="skip sync"),),
    field_mappings=(
        FieldMapping("actual_id", "msdyn_actualid"),
        FieldMapping("transaction_type", "msdyn_transactiontype", TRANSACTION_TYPE_OPTIONS),
        FieldMapping(
            "transaction_class", "msdyn_transactionclassification", TRANSACTION_CLASS_OPTIONS
        ),
        # Optional: dwsim's ActualCreated allows a cost actual without a billing type. Finance
        # checks each billing type against its line properties (domain.md, rule 6).
        FieldMapping("billing_type", "msdyn_billingtype", BILLING_TYPE_OPTIONS, required=False),
        FieldMapping("quantity", "msdyn_quantity"),
        FieldMapping("unit_price", "msdyn_price"),
        FieldMapping("amount", "msdyn_amount"),
        FieldMapping("currency", "msdyn_transactioncurrency"),
        FieldMapping("document_date", "msdyn_documentdate"),
        FieldMapping("accounting_date", "msdyn_accountingdate"),
        FieldMapping("legal_entity", "msdyn_legalentity"),
        FieldMapping("project_id", "msdyn_project"),
        # Cost actuals need no contract or customer; milestones and fees have no resource.
        _optional("contract_id", "msdyn_contract"),
        _optional("contract_line_id", "msdyn_contractline"),
        _optional("customer_id", "msdyn_customer"),
        _optional("resource", "msdyn_bookableresource"),
        _optional("role", "msdyn_resourcecategory"),
        _optional("invoice_id", "msdyn_invoice"),
        FieldMapping(
            "billing_method", "msdyn_billingmethod", BILLING_METHOD_OPTIONS, required=False
        ),
        _optional("unbilled_actual_id", "msdyn_unbilledactual"),
        _optional("reverses_actual_id", "msdyn_reversedactual"),
    ),
    integration_key=("msdyn_actualid",),
)

ACCOUNTING_TO_ACTUALS_LEG: Final = MapLeg(
    name="accounting detail to actuals",
    direction=Direction.FINANCE_TO_DATAVERSE,
    source_topics=("invoice-posted", "journal-posted"),
    target_topic="dv-actuals-accounting",
    # One posting event carries every actual it posted; each becomes its own record.
    explode=Explode("actuals"),
    # Only the accounting fields travel back: an actual is otherwise append-only in Dataverse.
    field_mappings=(
        FieldMapping("actual_id", "msdyn_actualid"),
        FieldMapping("voucher", "msdyn_externalreference"),
        FieldMapping("voucher_date", "msdyn_externalreferencedate"),
        FieldMapping("exchange_rate", "msdyn_exchangerate"),
        FieldMapping("accounting_currency_amount", "msdyn_amountaccountingcurrency"),
        # Cost and unbilled rows posted by a journal carry no sales tax.
        _optional("tax_amount", "msdyn_salestaxamount"),
    ),
    integration_key=("msdyn_actualid",),
)

ACTUALS_MAP: Final = TableMap(
    name=ACTUALS_MAP_NAME,
    version="1.0",
    legs=(ACTUALS_TO_STAGING_LEG, ACCOUNTING_TO_ACTUALS_LEG),
)

TABLE_MAPS: Final[tuple[TableMap, ...]] = (PROPOSAL_MAP, ACTUALS_MAP)

DEFAULT_ALERT_RULES: Final[tuple[AlertRule, ...]] = tuple(
    default_alert_rule(m.name) for m in TABLE_MAPS
)
