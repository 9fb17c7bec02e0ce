"""Application layer of the Dataverse service: one command, one transaction.

Each command locks what it changes (`FOR UPDATE`), asks the pure rules in `domain.py` what the
change is, writes it, and queues the events it causes in the outbox, all in one transaction:
a rule that refuses (`DataverseRuleError`) or a missing record (`NotFound`) rolls everything
back, so nothing is written and nothing is published.

Lock order, to keep concurrent commands from deadlocking: contract, then invoice, then actuals
(in id order), then milestones (in id order).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from uuid import UUID, uuid4

from schemas.dataverse_events import SnapshotMark
from schemas.initial_sync import InitialSyncRequested, SnapshotTable
from schemas.vocabulary import (
    BillingMethod,
    BillingType,
    MilestoneInvoiceStatus,
    TransactionClass,
)
from services.common import outbox
from services.common.db import DbConnection
from services.common.errors import NotFound
from services.common.logging import get_logger
from services.common.settings import Settings
from services.dataverse import domain, events
from services.dataverse import repository as repo
from services.dataverse.domain import (
    Contract,
    ContractLine,
    InvalidEditError,
    Milestone,
    MsdynActual,
    ProjectEntry,
    RecordMismatchError,
)

log = get_logger(__name__)


def today() -> date:
    """Today in UTC: the accounting date of what happens now."""
    return datetime.now(UTC).date()


# --------------------------------------------------------------------------------------------
# Master data
# --------------------------------------------------------------------------------------------


async def create_account(conn: DbConnection, *, name: str, legal_entity: str) -> UUID:
    """Create a customer account; returns its id."""
    account_id = uuid4()
    async with conn.transaction():
        await repo.insert_account(conn, account_id, name, legal_entity)
    log.info("account_created", account_id=str(account_id), legal_entity=legal_entity)
    return account_id


async def create_project(
    conn: DbConnection, *, name: str, legal_entity: str, customer_id: UUID
) -> UUID:
    """Create a project for an existing customer; returns its id."""
    project_id = uuid4()
    async with conn.transaction():
        await repo.get_account(conn, customer_id)
        await repo.insert_project(conn, project_id, name, legal_entity, customer_id)
    log.info("project_created", project_id=str(project_id), customer_id=str(customer_id))
    return project_id


@dataclass(frozen=True)
class ContractLineSpec:
    """What the PM enters for one contract line."""

    name: str
    project_id: UUID
    billing_method: BillingMethod
    bill_rate: Decimal
    cost_rate: Decimal
    bill_rates: Mapping[str, Decimal] = field(default_factory=dict)
    cost_rates: Mapping[str, Decimal] = field(default_factory=dict)


async def create_contract(
    conn: DbConnection,
    *,
    name: str,
    legal_entity: str,
    customer_id: UUID,
    currency: str,
    lines: Sequence[ContractLineSpec],
    payment_terms: str | None = None,
) -> UUID:
    """Create a project contract with its lines; every project must exist and be the customer's."""
    contract = Contract(
        contract_id=uuid4(),
        customer_id=customer_id,
        currency=currency.upper(),
        legal_entity=legal_entity,
        name=name,
    )
    records = [
        ContractLine(
            contract_line_id=uuid4(),
            contract_id=contract.contract_id,
            project_id=spec.project_id,
            billing_method=spec.billing_method,
            name=spec.name,
            default_bill_rate=spec.bill_rate,
            default_cost_rate=spec.cost_rate,
            bill_rates=dict(spec.bill_rates),
            cost_rates=dict(spec.cost_rates),
        )
        for spec in lines
    ]
    async with conn.transaction():
        await repo.get_account(conn, customer_id)
        for line in records:
            project = await repo.get_project(conn, line.project_id)
            if project["customer_id"] != customer_id:
                raise RecordMismatchError(
                    f"project {line.project_id} belongs to customer {project['customer_id']}, "
                    f"not to the contract's customer {customer_id}"
                )
        await repo.insert_contract(conn, contract, records, payment_terms)
    log.info("contract_created", contract_id=str(contract.contract_id), lines=len(records))
    return contract.contract_id


async def add_milestone(
    conn: DbConnection,
    *,
    contract_id: UUID,
    contract_line_id: UUID,
    name: str,
    amount: Decimal,
    milestone_date: date,
) -> UUID:
    """Add a billing milestone to a fixed-price line of the contract; returns its id."""
    async with conn.transaction():
        await repo.get_contract(conn, contract_id)
        line = await repo.get_contract_line(conn, contract_line_id)
        if line.contract_id != contract_id:
            raise RecordMismatchError(
                f"contract line {contract_line_id} is not on contract {contract_id}"
            )
        if line.billing_method is not BillingMethod.FIXED_PRICE:
            raise InvalidEditError(
                f"milestones bill fixed-price lines only (billing method "
                f"{line.billing_method}): contract line {contract_line_id}"
            )
        milestone = Milestone(
            milestone_id=uuid4(),
            contract_id=contract_id,
            contract_line_id=contract_line_id,
            project_id=line.project_id,
            amount=domain.money(amount),
            milestone_date=milestone_date,
            name=name,
        )
        await repo.insert_milestone(conn, milestone)
    log.info("milestone_created", milestone_id=str(milestone.milestone_id))
    return milestone.milestone_id


async def set_milestone_ready(conn: DbConnection, milestone_id: UUID, ready: bool) -> Milestone:
    """Move a milestone to ready to invoice (or back to not ready)."""
    async with conn.transaction():
        milestone = await repo.get_milestone(conn, milestone_id, for_update=True)
        changed = domain.mark_milestone_ready(milestone, ready)
        await repo.update_milestones(conn, [changed])
    log.info("milestone_readiness_set", milestone_id=str(milestone_id), ready=ready)
    return changed


# --------------------------------------------------------------------------------------------
# Approvals and the billing backlog
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EntrySpec:
    """An entry to approve; rates default to the contract line's price list for the role."""

    transaction_class: TransactionClass
    project_id: UUID
    contract_line_id: UUID
    quantity: Decimal
    document_date: date
    billable_quantity: Decimal | None = None
    cost_rate: Decimal | None = None
    bill_rate: Decimal | None = None
    resource: str | None = None
    role: str | None = None


async def approve_entry(
    conn: DbConnection, settings: Settings, spec: EntrySpec
) -> tuple[UUID, tuple[MsdynActual, ...]]:
    """Approve an entry: its cost and unbilled-sales actuals, and `actuals-created` for each."""
    async with conn.transaction():
        await repo.get_project(conn, spec.project_id)
        line = await repo.get_contract_line(conn, spec.contract_line_id)
        contract = (await repo.get_contract(conn, line.contract_id)).contract
        entry = ProjectEntry(
            entry_id=uuid4(),
            transaction_class=spec.transaction_class,
            project_id=spec.project_id,
            contract_line_id=spec.contract_line_id,
            quantity=spec.quantity,
            billable_quantity=(
                spec.billable_quantity if spec.billable_quantity is not None else spec.quantity
            ),
            cost_rate=spec.cost_rate
            if spec.cost_rate is not None
            else line.cost_rate_for(spec.role),
            bill_rate=spec.bill_rate
            if spec.bill_rate is not None
            else line.bill_rate_for(spec.role),
            document_date=spec.document_date,
            resource=spec.resource,
            role=spec.role,
        )
        actuals = domain.approve_entry(
            entry, contract=contract, contract_line=line, accounting_date=today(), new_id=uuid4
        )
        await repo.insert_entry(conn, entry)
        await repo.insert_actuals(conn, actuals)
        await events.add_actuals_created(conn, settings, actuals)
    log.info(
        "entry_approved",
        entry_id=str(entry.entry_id),
        project_id=str(entry.project_id),
        actuals=len(actuals),
    )
    return entry.entry_id, actuals


async def cancel_entry(conn: DbConnection, settings: Settings, entry_id: UUID) -> domain.Changes:
    """Cancel an approval: its live actuals adjusted and reversed, reversals published."""
    async with conn.transaction():
        if not await repo.entry_exists(conn, entry_id):
            raise NotFound(f"no entry {entry_id}")
        actuals = await repo.actuals_of_entry(conn, entry_id, for_update=True)
        changes = domain.cancel_approval(entry_id, actuals, accounting_date=today(), new_id=uuid4)
        await repo.update_actuals(conn, changes.updated_actuals)
        await repo.insert_actuals(conn, changes.new_actuals)
        await events.add_actuals_created(conn, settings, changes.new_actuals)
    log.info("entry_cancelled", entry_id=str(entry_id), reversals=len(changes.new_actuals))
    return changes


async def set_ready_to_invoice(
    conn: DbConnection, actual_ids: Sequence[UUID], ready: bool
) -> list[MsdynActual]:
    """Put actuals in (or take them out of) the billing backlog; all or none."""
    async with conn.transaction():
        found = await repo.actuals_by_ids(conn, actual_ids, for_update=True)
        missing = [str(a) for a in actual_ids if a not in found]
        if missing:
            raise NotFound(f"no actual {', '.join(missing)}")
        changed = [domain.mark_ready_to_invoice(found[a], ready) for a in dict.fromkeys(actual_ids)]
        await repo.update_actuals(conn, changed)
    log.info("backlog_readiness_set", actuals=len(changed), ready=ready)
    return changed


# --------------------------------------------------------------------------------------------
# Proforma invoices
# --------------------------------------------------------------------------------------------


async def create_invoice(conn: DbConnection, contract_id: UUID, invoice_date: date) -> UUID:
    """Create a draft from what is ready to invoice on the contract; returns its id."""
    async with conn.transaction():
        # The contract lock makes two concurrent creations take turns: the second finds the
        # backlog already held by the first draft instead of double-billing it.
        contract = (await repo.get_contract(conn, contract_id, for_update=True)).contract
        lines = await repo.contract_lines_of(conn, contract_id)
        backlog = await repo.backlog_of_contract(conn, contract_id, for_update=True)
        milestones = await repo.milestones_of_contract(
            conn, contract_id, invoice_status=MilestoneInvoiceStatus.READY, for_update=True
        )
        change = domain.create_proforma_invoice(
            contract, lines, backlog, milestones, invoice_date=invoice_date, new_id=uuid4
        )
        await repo.insert_invoice(conn, change.invoice)
        await repo.update_actuals(conn, change.updated_actuals)
        await repo.update_milestones(conn, change.updated_milestones)
    log.info(
        "invoice_created",
        invoice_id=str(change.invoice.invoice_id),
        contract_id=str(contract_id),
        details=len(change.invoice.details),
    )
    return change.invoice.invoice_id


async def _held_records(
    conn: DbConnection, details: Sequence[domain.InvoiceLineDetail]
) -> tuple[dict[UUID, MsdynActual], dict[UUID, Milestone]]:
    """The actuals and milestones behind these details, locked."""
    actual_ids = [a for d in details for a in (d.actual_id, d.billed_actual_id) if a is not None]
    milestone_ids = [d.milestone_id for d in details if d.milestone_id is not None]
    actuals = await repo.actuals_by_ids(conn, actual_ids, for_update=True)
    milestones = await repo.milestones_by_ids(conn, milestone_ids, for_update=True)
    return actuals, milestones


def _require_detail(invoice: domain.ProformaInvoice, detail_id: UUID) -> None:
    if all(d.detail_id != detail_id for d in invoice.details):
        raise NotFound(f"no line detail {detail_id} on invoice {invoice.invoice_id}")


async def edit_detail(
    conn: DbConnection,
    invoice_id: UUID,
    detail_id: UUID,
    *,
    quantity: Decimal | None,
    billing_type: BillingType | None,
) -> repo.StoredInvoice:
    """Change a draft detail's quantity and/or billing type; returns the invoice as stored."""
    async with conn.transaction():
        stored = await repo.get_invoice(conn, invoice_id, for_update=True)
        _require_detail(stored.invoice, detail_id)
        invoice = domain.edit_detail(
            stored.invoice, detail_id, quantity=quantity, billing_type=billing_type
        )
        saved = await repo.save_invoice(conn, invoice, before=stored.invoice)
    log.info(
        "invoice_detail_edited",
        invoice_id=str(invoice_id),
        detail_id=str(detail_id),
        quantity=str(quantity) if quantity is not None else None,
        billing_type=billing_type,
    )
    return saved


async def delete_detail(
    conn: DbConnection, invoice_id: UUID, detail_id: UUID
) -> repo.StoredInvoice:
    """Delete a draft detail; what it held goes back to the backlog. Returns the invoice."""
    async with conn.transaction():
        stored = await repo.get_invoice(conn, invoice_id, for_update=True)
        _require_detail(stored.invoice, detail_id)
        actuals, milestones = await _held_records(conn, [stored.invoice.detail(detail_id)])
        change = domain.delete_detail(stored.invoice, detail_id, actuals, milestones)
        saved = await repo.save_invoice(conn, change.invoice, before=stored.invoice)
        await repo.update_actuals(conn, change.updated_actuals)
        await repo.update_milestones(conn, change.updated_milestones)
    log.info("invoice_detail_deleted", invoice_id=str(invoice_id), detail_id=str(detail_id))
    return saved


async def delete_invoice(conn: DbConnection, invoice_id: UUID) -> None:
    """Delete a draft invoice; everything it held goes back to the backlog."""
    async with conn.transaction():
        stored = await repo.get_invoice(conn, invoice_id, for_update=True)
        actuals, milestones = await _held_records(conn, stored.invoice.details)
        changes = domain.delete_invoice(stored.invoice, actuals, milestones)
        await repo.update_actuals(conn, changes.updated_actuals)
        await repo.update_milestones(conn, changes.updated_milestones)
        await repo.delete_invoice_row(conn, invoice_id)
    log.info("invoice_deleted", invoice_id=str(invoice_id))


async def submit_for_review(conn: DbConnection, invoice_id: UUID) -> repo.StoredInvoice:
    """Draft → in review; returns the invoice as stored."""
    async with conn.transaction():
        stored = await repo.get_invoice(conn, invoice_id, for_update=True)
        saved = await repo.save_invoice(
            conn, domain.submit_for_review(stored.invoice), before=stored.invoice
        )
    log.info("invoice_submitted_for_review", invoice_id=str(invoice_id))
    return saved


async def return_to_draft(conn: DbConnection, invoice_id: UUID) -> repo.StoredInvoice:
    """In review → draft; returns the invoice as stored."""
    async with conn.transaction():
        stored = await repo.get_invoice(conn, invoice_id, for_update=True)
        saved = await repo.save_invoice(
            conn, domain.return_to_draft(stored.invoice), before=stored.invoice
        )
    log.info("invoice_returned_to_draft", invoice_id=str(invoice_id))
    return saved


async def set_tax(conn: DbConnection, invoice_id: UUID, tax_amount: Decimal) -> repo.StoredInvoice:
    """Set the header's tax amount; returns the invoice as stored."""
    async with conn.transaction():
        stored = await repo.get_invoice(conn, invoice_id, for_update=True)
        saved = await repo.save_invoice(
            conn, domain.set_tax(stored.invoice, tax_amount), before=stored.invoice
        )
    log.info("invoice_tax_set", invoice_id=str(invoice_id), tax_amount=str(tax_amount))
    return saved


async def confirm_invoice(
    conn: DbConnection, settings: Settings, invoice_id: UUID
) -> repo.StoredInvoice:
    """Confirm an invoice: billing actuals, the header and every new actual to the outbox;
    returns the confirmed invoice as stored.

    The invoice row lock serialises confirmations: of two racing requests the second waits,
    then finds the invoice confirmed and is refused (`InvoiceConfirmedError`), so an invoice
    is confirmed, and published, once.
    """
    async with conn.transaction():
        stored = await repo.get_invoice(conn, invoice_id, for_update=True)
        actuals, milestones = await _held_records(conn, stored.invoice.details)
        result = domain.confirm_invoice(
            stored.invoice, actuals, milestones, accounting_date=today(), new_id=uuid4
        )
        await repo.update_actuals(conn, result.updated_actuals)
        await repo.insert_actuals(conn, result.new_actuals)
        await repo.update_milestones(conn, result.updated_milestones)
        confirmed = await repo.save_invoice(
            conn,
            result.invoice,
            before=stored.invoice,
            expected_billed_lines=result.expected_billed_sales_count,
        )
        terms = await repo.contract_terms(
            conn, stored.invoice.contract_id, stored.invoice.customer_id
        )
        methods = {terms.billing_methods[line.contract_line_id] for line in result.invoice.lines}
        # The header and the new actuals are one transaction for dual-write's limits.
        transaction = events.source_transaction(
            result.new_actuals, header_legal_entities=[result.invoice.legal_entity]
        )
        header = events.invoice_confirmed_row(
            settings,
            result.invoice,
            invoice_number=stored.invoice_number,
            expected_billed_lines=result.expected_billed_sales_count,
            customer_name=terms.customer_name,
            # One billing method when every line has the same, else none (a mixed invoice).
            billing_method=methods.pop() if len(methods) == 1 else None,
            payment_terms=terms.payment_terms,
            transaction=transaction,
        )
        # One outbox statement: the header first, then the actuals in creation order.
        actual_rows = events.actuals_created_rows(
            settings, result.new_actuals, invoice_id=invoice_id, transaction=transaction
        )
        await outbox.add_many(conn, itertools.chain([header], actual_rows))
    log.info(
        "invoice_confirmed",
        invoice_id=str(invoice_id),
        is_corrective=result.invoice.is_corrective,
        total_amount=str(result.invoice.total_amount),
        new_actuals=len(result.new_actuals),
        expected_billed_lines=result.expected_billed_sales_count,
    )
    return confirmed


async def correct_invoice(conn: DbConnection, invoice_id: UUID, invoice_date: date) -> UUID:
    """Start a corrective draft of a confirmed invoice (a full credit); returns its id."""
    async with conn.transaction():
        # The corrected invoice's lock serialises two corrections of it: the second reads the
        # first's draft below and is refused.
        stored = await repo.get_invoice(conn, invoice_id, for_update=True)
        billed = await repo.billed_sales_of_invoice(conn, invoice_id)
        open_corrections = await repo.open_corrections_of(conn, invoice_id)
        corrective = domain.correct_invoice(
            stored.invoice,
            billed,
            invoice_date=invoice_date,
            new_id=uuid4,
            open_corrections=open_corrections,
        )
        await repo.insert_invoice(conn, corrective)
    log.info(
        "corrective_invoice_created",
        invoice_id=str(corrective.invoice_id),
        corrects_invoice_id=str(invoice_id),
    )
    return corrective.invoice_id


async def publish_snapshot(
    conn: DbConnection, settings: Settings, request: InitialSyncRequested
) -> int:
    """Answer an initial sync's signal: publish the existing rows the map asked for, marked
    with the snapshot id, through the outbox; returns how many rows.

    Runs in the caller's transaction (the inbox's, which records the signal as handled with
    the rows it caused), reading each row's current state under a FOR SHARE lock. Why a row
    changed while the snapshot runs still ends in its newest state on the other side: a row's
    snapshot message and its live messages share the message key (invoice id, else project
    id), so one partition, and the relay publishes outbox rows in commit order (the xmin rule,
    `services/common/outbox.py`). A live change that commits before this transaction is read
    by it (or, holding the row, makes it wait, then read the committed row); one that commits
    after it is published after the snapshot row. Either way the newest state comes last.
    Rows are chunked like live ones: one message per key and up to 500 actuals.
    """
    entities = request.legal_entities
    rows: list[events.OutboxRow]
    if request.table is SnapshotTable.CONFIRMED_INVOICES:
        invoices = await repo.confirmed_invoices_for_snapshot(conn, entities)
        mark = SnapshotMark(snapshot_id=request.snapshot_id, rows=len(invoices))
        rows = []
        for stored in invoices:
            invoice = stored.invoice
            terms = await repo.contract_terms(conn, invoice.contract_id, invoice.customer_id)
            methods = {terms.billing_methods[line.contract_line_id] for line in invoice.lines}
            rows.append(
                events.invoice_confirmed_row(
                    settings,
                    invoice,
                    invoice_number=stored.invoice_number,
                    expected_billed_lines=stored.expected_billed_lines or 0,
                    customer_name=terms.customer_name,
                    billing_method=methods.pop() if len(methods) == 1 else None,
                    payment_terms=terms.payment_terms,
                    snapshot=mark,
                )
            )
        count = len(invoices)
    else:
        actuals = await repo.actuals_for_snapshot(conn, entities)
        mark = SnapshotMark(snapshot_id=request.snapshot_id, rows=len(actuals))
        # Per key in creation order (a stable sort), so a key's actuals share messages; there
        # is no order across keys to keep.
        by_key = sorted(actuals, key=events.actual_key)
        rows = list(events.actuals_created_rows(settings, by_key, snapshot=mark))
        count = len(actuals)
    await outbox.add_many(conn, rows)
    log.info(
        "snapshot_published",
        snapshot_id=str(request.snapshot_id),
        map=request.map_name,
        table=request.table.value,
        rows=count,
        messages=len(rows),
        legal_entities=entities,
    )
    return count
