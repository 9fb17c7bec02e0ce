"""The events Dataverse publishes, written to the outbox in the transaction of the change.

* `actuals-created`: every new actual, skip-sync ones included (filtering is the bridge's job).
  A transaction's consecutive actuals of one key travel in one message (up to
  `MAX_ACTUALS_PER_MESSAGE`). Key: the actual's invoice id when it has one, else its project
  id, so that the actuals of one invoice stay in order on one partition. Correlation id: the
  invoice id where there is one.
* `invoice-confirmed`: a confirmed proforma's header. Key and correlation id: the invoice id.

Every message carries its `transaction` (`source_transaction`): the Dataverse transaction it is
part of and that transaction's size, which dual-write's limits are about (docs/bridge.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Final
from uuid import UUID, uuid4

from schemas.dataverse_events import (
    ActualCreated,
    ActualsCreated,
    InvoiceConfirmed,
    SnapshotMark,
    SourceTransaction,
)
from schemas.envelope import Envelope
from schemas.topics import Topic, topic_name
from services.common import outbox
from services.common.db import DbConnection
from services.common.settings import Settings
from services.dataverse.domain import MsdynActual, ProformaInvoice

SOURCE = "dataverse"
ACTUALS_CREATED = "actuals.created"
INVOICE_CONFIRMED = "invoice.confirmed"
# Actuals per message at most: about 600 bytes each, so a message stays far below the
# broker's default size limit (1 MiB).
MAX_ACTUALS_PER_MESSAGE: Final = 500


def actual_created(actual: MsdynActual) -> ActualCreated:
    """The `actuals-created` payload of one actual."""
    return ActualCreated(
        actual_id=actual.actual_id,
        transaction_type=actual.transaction_type,
        transaction_class=actual.transaction_class,
        billing_type=actual.billing_type,
        billing_status=actual.billing_status,
        adjustment_status=actual.adjustment_status,
        quantity=actual.quantity,
        unit_price=actual.unit_price,
        amount=actual.amount,
        currency=actual.currency,
        document_date=actual.document_date,
        accounting_date=actual.accounting_date,
        legal_entity=actual.legal_entity,
        project_id=actual.project_id,
        contract_id=actual.contract_id,
        contract_line_id=actual.contract_line_id,
        billing_method=actual.billing_method,
        customer_id=actual.customer_id,
        resource=actual.resource,
        role=actual.role,
        invoice_id=actual.invoice_id,
        unbilled_actual_id=actual.unbilled_actual_id,
        reverses_actual_id=actual.reverses_actual_id,
        skip_sync=actual.skip_sync,
    )


def actual_key(actual: MsdynActual) -> str:
    """Topic key of an actual: its invoice, else its project (DESIGN.md, Topics)."""
    return str(actual.invoice_id if actual.invoice_id is not None else actual.project_id)


OutboxRow = tuple[str, str | None, Envelope[Any]]


def source_transaction(
    actuals: Sequence[MsdynActual], *, header_legal_entities: Sequence[str] = ()
) -> SourceTransaction:
    """The transaction that publishes `actuals` (and one header per `header_legal_entities`):
    the rows it gives to dual-write are the headers and the actuals not flagged skip sync,
    which the actuals map leaves out (a 1,500-line invoice: 1 + 1,500 records)."""
    synced = [a for a in actuals if not a.skip_sync]
    entities = {*header_legal_entities, *(a.legal_entity for a in synced)}
    return SourceTransaction(
        transaction_id=uuid4(),
        records=len(header_legal_entities) + len(synced),
        legal_entities=len(entities),
    )


def actuals_created_rows(
    settings: Settings,
    actuals: Sequence[MsdynActual],
    *,
    invoice_id: UUID | None = None,
    transaction: SourceTransaction | None = None,
    snapshot: SnapshotMark | None = None,
) -> Iterator[OutboxRow]:
    """The `actuals-created` outbox rows of the new actuals, in creation order, made as they
    are read: `outbox.add_many` encodes each before the next is made, so a 50,000-line
    confirmation does not hold 100,000 actuals as event models at once.

    `invoice_id` is the invoice whose confirmation created them; it is the correlation id of
    all of them (also of an actual put back into the backlog, which carries no invoice id).
    `transaction`: the transaction they are part of; by default one of these actuals alone.
    `snapshot`: the rows answer an initial sync's snapshot (existing actuals, not new ones);
    they name no transaction, so each message is one of its own (dual-write's initial sync
    runs in batches, not as one live transaction).
    """
    if snapshot is None:
        transaction = transaction or source_transaction(actuals)
    topic = topic_name(Topic.ACTUALS_CREATED, settings.topic_prefix)

    def correlation(actual: MsdynActual) -> str | None:
        correlation = invoice_id or actual.invoice_id
        return str(correlation) if correlation else None

    runs = outbox.consecutive_runs(
        actuals, lambda a: (actual_key(a), correlation(a)), MAX_ACTUALS_PER_MESSAGE
    )
    for run in runs:
        yield (
            topic,
            actual_key(run[0]),
            outbox.envelope(
                ACTUALS_CREATED,
                SOURCE,
                ActualsCreated(
                    actuals=[actual_created(a) for a in run],
                    transaction=transaction,
                    snapshot=snapshot,
                ),
                correlation_id=correlation(run[0]),
            ),
        )


async def add_actuals_created(
    conn: DbConnection,
    settings: Settings,
    actuals: Sequence[MsdynActual],
    *,
    invoice_id: UUID | None = None,
) -> None:
    """Queue `actuals-created` for the new actuals, in creation order (see
    `actuals_created_rows`)."""
    await outbox.add_many(conn, actuals_created_rows(settings, actuals, invoice_id=invoice_id))


def invoice_confirmed_row(
    settings: Settings,
    invoice: ProformaInvoice,
    *,
    invoice_number: str,
    expected_billed_lines: int,
    customer_name: str | None,
    billing_method: Any,
    payment_terms: str | None,
    transaction: SourceTransaction | None = None,
    snapshot: SnapshotMark | None = None,
) -> OutboxRow:
    """The outbox row of the confirmed header, for Finance's proposal (`snapshot`: as a row
    of an initial sync's snapshot)."""
    payload = InvoiceConfirmed(
        invoice_id=invoice.invoice_id,
        invoice_number=invoice_number,
        legal_entity=invoice.legal_entity,
        customer_id=invoice.customer_id,
        customer_name=customer_name,
        contract_id=invoice.contract_id,
        billing_method=billing_method,
        currency=invoice.currency,
        invoice_date=invoice.invoice_date,
        total_amount=invoice.total_amount,
        tax_amount=invoice.tax_amount,
        payment_terms=payment_terms,
        expected_billed_lines=expected_billed_lines,
        is_corrective=invoice.is_corrective,
        corrects_invoice_id=invoice.corrects_invoice_id,
        transaction=transaction,
        snapshot=snapshot,
    )
    return (
        topic_name(Topic.INVOICE_CONFIRMED, settings.topic_prefix),
        str(invoice.invoice_id),
        outbox.envelope(INVOICE_CONFIRMED, SOURCE, payload, correlation_id=str(invoice.invoice_id)),
    )
