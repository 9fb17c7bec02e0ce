"""Consumers of what the bridge maps into Finance: proposal headers and staged actuals.

Both run inside the inbox transaction, so the effect, the event id and the receipt commit
together. Each is idempotent by business key as well as by event id: the bridge re-sends a
record with a new event id when its receipt is late, so the header is upserted by ProposalId
and a staged actual is inserted ON CONFLICT (actual id) DO NOTHING. Every delivery, re-sends
included, is answered on `sync-receipts`, record by record, applied or rejected with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas.envelope import Envelope
from schemas.mapped_events import (
    BridgeRecord,
    ProposalHeaderRecord,
    StagingActualRecord,
    StagingActualRecords,
)
from schemas.topics import Topic, topic_name
from schemas.vocabulary import BillingMethod, BillingType, TransactionClass, TransactionType
from services.common import receipts
from services.common.db import DbConnection
from services.common.inbox import Delivery, Handler, Subscription
from services.common.logging import get_logger
from services.common.settings import Settings
from services.finance import repository
from services.finance.domain import (
    FinanceRuleError,
    LegalEntitySetup,
    StagingRow,
    validate_staging_row,
)

log = get_logger(__name__)

TARGET = "finance"

# Option labels of the staging table (as the actuals map's value maps produce them) -> dwsim's
# vocabulary, which is what Finance stores.
TRANSACTION_TYPES: dict[str, TransactionType] = {
    "Cost": TransactionType.COST,
    "UnbilledSales": TransactionType.UNBILLED_SALES,
    "BilledSales": TransactionType.BILLED_SALES,
}
TRANSACTION_CLASSES: dict[str, TransactionClass] = {
    "Time": TransactionClass.TIME,
    "Expense": TransactionClass.EXPENSE,
    "Material": TransactionClass.MATERIAL,
    "Milestone": TransactionClass.MILESTONE,
    "Fee": TransactionClass.FEE,
}
BILLING_TYPES: dict[str, BillingType] = {
    "Chargeable": BillingType.CHARGEABLE,
    "NonChargeable": BillingType.NON_CHARGEABLE,
    "Complimentary": BillingType.COMPLIMENTARY,
}
BILLING_METHODS: dict[str, BillingMethod] = {
    "TimeAndMaterial": BillingMethod.TIME_AND_MATERIAL,
    "FixedPrice": BillingMethod.FIXED_PRICE,
}


def staging_values(record: StagingActualRecord) -> dict[str, Any]:
    """The staging table's columns for a mapped actual (status and reason still unset)."""
    billing_type = BILLING_TYPES.get(record.msdyn_billingtype or "")
    billing_method = BILLING_METHODS.get(record.msdyn_billingmethod or "")
    return {
        "actual_id": record.msdyn_actualid,
        "legal_entity": record.msdyn_legalentity,
        "transaction_type": str(TRANSACTION_TYPES[record.msdyn_transactiontype]),
        "transaction_class": str(TRANSACTION_CLASSES[record.msdyn_transactionclassification]),
        "billing_type": str(billing_type) if billing_type else None,
        "billing_method": str(billing_method) if billing_method else None,
        "quantity": record.msdyn_quantity,
        "price": record.msdyn_price,
        "amount": record.msdyn_amount,
        "currency": record.msdyn_transactioncurrency,
        "document_date": record.msdyn_documentdate,
        "accounting_date": record.msdyn_accountingdate,
        "project_id": record.msdyn_project,
        "contract_id": record.msdyn_contract,
        "contract_line_id": record.msdyn_contractline,
        "customer_id": record.msdyn_customer,
        "resource": record.msdyn_bookableresource,
        "resource_category": record.msdyn_resourcecategory,
        "invoice_id": record.msdyn_invoice,
        "unbilled_actual_id": record.msdyn_unbilledactual,
        "reverses_actual_id": record.msdyn_reversedactual,
    }


def refusal_of_actual(
    record: StagingActualRecord, setups: Mapping[str, LegalEntitySetup]
) -> str | None:
    """Why Finance refuses the actual (domain rule 6 and staging validation), or None; the
    setups are those of the batch, loaded once."""
    actual_id = str(record.msdyn_actualid)
    billing_type = BILLING_TYPES.get(record.msdyn_billingtype or "")
    if billing_type is None:
        # Finance picks the line property by billing type; without one it cannot take the row.
        return f"actual {actual_id} has no billing type, so no line property can be mapped"
    row = StagingRow(
        actual_id=actual_id,
        legal_entity=record.msdyn_legalentity,
        transaction_type=TRANSACTION_TYPES[record.msdyn_transactiontype],
        transaction_class=TRANSACTION_CLASSES[record.msdyn_transactionclassification],
        billing_type=billing_type,
        quantity=record.msdyn_quantity,
        amount=record.msdyn_amount,
        currency=record.msdyn_transactioncurrency,
        accounting_date=record.msdyn_accountingdate,
        project_id=str(record.msdyn_project),
        invoice_id=str(record.msdyn_invoice) if record.msdyn_invoice else None,
    )
    try:
        validate_staging_row(row, setups)
    except FinanceRuleError as exc:
        return str(exc)
    return None


async def apply_staging_actual(
    conn: DbConnection, settings: Settings, event: Envelope[Any]
) -> None:
    """Stage one message's mapped actuals (or keep them refused with their reasons) and
    answer the bridge."""
    await apply_staging_actuals(conn, settings, [event])


async def apply_staging_actuals(
    conn: DbConnection, settings: Settings, events: list[Envelope[Any]]
) -> None:
    """Stage the mapped actuals of these messages (or keep them refused with their reasons)
    and answer the bridge, each record by its record id, in delivery order: one setup read,
    one insert and one receipt statement for the batch.

    A re-sent actual that is already staged and valid changes nothing; one that was refused is
    validated again, so fixing the setup and retrying in the bridge lets it in.
    """
    carried: list[tuple[Envelope[Any], BridgeRecord[StagingActualRecord]]] = [
        (e, item) for e in events for item in e.payload.records
    ]
    records = [item.record for _, item in carried]
    setups = await repository.load_setups(conn, {r.msdyn_legalentity for r in records})
    reasons = [refusal_of_actual(r, setups) for r in records]
    rows = [
        staging_values(r) | {"status": "invalid" if why else "valid", "reason": why}
        for r, why in zip(records, reasons, strict=True)
    ]
    inserted = await repository.insert_staging_rows(conn, rows)
    answers: list[receipts.Answer] = []
    outcomes: dict[tuple[str | None, str], int] = {}
    for (event, item), record, values in zip(carried, records, rows, strict=True):
        actual_id = str(record.msdyn_actualid)
        reason = values["reason"]
        if actual_id in inserted:
            inserted.discard(actual_id)  # a repeat later in the batch is a re-send
            outcome = "staged" if reason is None else "refused"
        elif await repository.revalidate_staging_row(conn, values):
            outcome = "revalidated" if reason is None else "refused_again"
        else:
            # Already staged and valid: an actual is append-only, the re-send carries nothing.
            stored = await repository.staging_status(conn, actual_id)
            reason = stored["reason"] if stored is not None else reason
            outcome = "duplicate"
        answers.append(receipts.Answer(event, item.record_id, actual_id, reason))
        invoice_id = str(record.msdyn_invoice) if record.msdyn_invoice else None
        if reason is not None:
            log.info(
                "staging_actual_received",
                actual_id=actual_id,
                invoice_id=invoice_id,
                outcome=outcome,
                reason=reason,
            )
        else:
            outcomes[invoice_id, outcome] = outcomes.get((invoice_id, outcome), 0) + 1
    await receipts.answer_many(conn, settings, answers, TARGET)
    # Accepted actuals are logged per invoice and outcome, not one line each (thousands).
    for (invoice_id, outcome), count in outcomes.items():
        log.info("staging_actuals_received", invoice_id=invoice_id, outcome=outcome, count=count)


def header_values(record: ProposalHeaderRecord) -> dict[str, Any]:
    """The proposal table's columns for a mapped header."""
    return {
        "proposal_id": record.ProposalId,
        "legal_entity": record.DataAreaId,
        "customer_id": record.InvoiceAccount,
        "contract_id": record.ContractId,
        "currency": record.CurrencyCode,
        "invoice_date": record.InvoiceDate,
        "proposal_total": record.ProposalTotal,
        "sales_tax_amount": record.SalesTaxAmount,
        "payment_terms": record.PaymentTerms,
        "invoice_address": record.InvoiceAddress,
        "expected_billed_lines": record.ExpectedBilledLines,
        "is_corrective": record.IsCorrective,
        "corrected_proposal_id": record.CorrectedProposalId,
    }


async def apply_proposal_header(
    conn: DbConnection, settings: Settings, event: Envelope[Any]
) -> None:
    """Create or refresh a project invoice proposal header and answer the bridge.

    A header for a legal entity Finance does not know is refused and kept, with its reason, in
    `refused_record` (there is no proposal to hang it on); a later re-send applies it.
    """
    record: ProposalHeaderRecord = event.payload
    proposal_id = str(record.ProposalId)
    topic = topic_name(Topic.FO_INVOICE_PROPOSALS, settings.topic_prefix)
    setups = await repository.load_setups(conn, [record.DataAreaId])
    reason: str | None = None
    if record.DataAreaId not in setups:
        reason = f"unknown legal entity {record.DataAreaId} on proposal {proposal_id}"
        await repository.keep_refused(
            conn, topic, proposal_id, reason, record.model_dump(mode="json")
        )
        outcome = "refused"
    else:
        outcome = await repository.upsert_proposal_header(conn, header_values(record))
        await repository.forget_refused(conn, topic, proposal_id)
    await receipts.answer(conn, settings, event, proposal_id, TARGET, reason)
    log.info(
        "proposal_header_received",
        invoice_id=proposal_id,
        outcome=outcome,
        expected_billed_lines=record.ExpectedBilledLines,
        reason=reason,
    )


def subscriptions(settings: Settings) -> list[Subscription]:
    """What Finance consumes: the proposal map's headers and the actuals map's rows."""

    def bound(apply: Any) -> Handler:
        async def handle(conn: DbConnection, event: Envelope[Any]) -> None:
            await apply(conn, settings, event)

        return handle

    async def stage_batch(conn: DbConnection, deliveries: list[Delivery]) -> None:
        await apply_staging_actuals(conn, settings, [d.event for d in deliveries])

    return [
        Subscription(
            topic_name(Topic.FO_INVOICE_PROPOSALS, settings.topic_prefix),
            ProposalHeaderRecord,
            bound(apply_proposal_header),
        ),
        Subscription(
            topic_name(Topic.FO_ACTUALS_STAGING, settings.topic_prefix),
            StagingActualRecords,
            bound(apply_staging_actual),
            batch_handler=stage_batch,
        ),
    ]
