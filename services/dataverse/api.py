"""HTTP API of the Dataverse service (FastAPI; OpenAPI page at /docs).

Project-manager operations need the project manager's bearer token; reads take any role's
token. Amounts and quantities are accepted as JSON strings or numbers and returned as strings
(exact decimals). A rule that refuses an operation answers 409 with its message, an unknown id
404, an invalid body 422 naming the field; in each case nothing is written.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from schemas.decimal_text import NON_NEGATIVE, POSITIVE, DecimalText
from schemas.vocabulary import (
    AdjustmentStatus,
    BillingMethod,
    BillingStatus,
    BillingType,
    InvoiceStatus,
    MilestoneInvoiceStatus,
    TransactionClass,
    TransactionType,
)
from services.common.api import connection, create_app
from services.common.auth import Role, require_role
from services.common.db import DbConnection
from services.common.settings import Settings
from services.dataverse import commands
from services.dataverse import repository as repo
from services.dataverse.domain import InvoiceLineDetail, Milestone

Conn = Annotated[DbConnection, Depends(connection)]
PROJECT_MANAGER = require_role(Role.PROJECT_MANAGER)
# Master data (customers, projects, contracts) may also be set up by an administrator.
SETUP = require_role(Role.PROJECT_MANAGER, Role.ADMINISTRATOR)
ANY_ROLE = require_role(*Role)

NonNegative = Annotated[Decimal, Field(ge=0, allow_inf_nan=False), DecimalText(NON_NEGATIVE)]
Positive = Annotated[Decimal, Field(gt=0, allow_inf_nan=False), DecimalText(POSITIVE)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
LegalEntity = Annotated[str, Field(min_length=1, max_length=20)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------------
# Bodies and answers
# --------------------------------------------------------------------------------------------


class AccountIn(_In):
    """A customer account to create."""

    name: Name
    legal_entity: LegalEntity


class AccountOut(BaseModel):
    """A customer account."""

    account_id: UUID
    name: str
    legal_entity: str
    created_at: datetime


class ProjectIn(_In):
    """A project to create, for an existing customer."""

    name: Name
    legal_entity: LegalEntity
    customer_id: UUID


class ProjectOut(BaseModel):
    """A project."""

    project_id: UUID
    name: str
    legal_entity: str
    customer_id: UUID
    created_at: datetime


class ContractLineIn(_In):
    """One contract line: a project, a billing method and a price list."""

    name: Name
    project_id: UUID
    billing_method: BillingMethod
    bill_rate: NonNegative = Decimal("0")
    cost_rate: NonNegative = Decimal("0")
    bill_rates: dict[str, NonNegative] = Field(default_factory=dict)
    cost_rates: dict[str, NonNegative] = Field(default_factory=dict)


class ContractIn(_In):
    """A project contract to create, with its lines."""

    name: Name
    legal_entity: LegalEntity
    customer_id: UUID
    currency: str = Field(pattern=r"^[A-Za-z]{3}$")
    payment_terms: str | None = None
    lines: list[ContractLineIn] = Field(min_length=1)


class ContractLineOut(BaseModel):
    """A contract line."""

    contract_line_id: UUID
    contract_id: UUID
    project_id: UUID
    name: str
    billing_method: BillingMethod
    bill_rate: Decimal
    cost_rate: Decimal
    bill_rates: dict[str, Decimal]
    cost_rates: dict[str, Decimal]


class ContractOut(BaseModel):
    """A project contract with its lines."""

    contract_id: UUID
    name: str
    legal_entity: str
    customer_id: UUID
    currency: str
    payment_terms: str | None
    created_at: datetime
    lines: list[ContractLineOut]


class MilestoneIn(_In):
    """A billing milestone of a fixed-price contract line."""

    contract_line_id: UUID
    name: Name
    amount: Positive
    milestone_date: date


class MilestoneOut(BaseModel):
    """A milestone and its invoice status."""

    milestone_id: UUID
    contract_id: UUID
    contract_line_id: UUID
    project_id: UUID
    name: str
    amount: Decimal
    milestone_date: date
    invoice_status: MilestoneInvoiceStatus


class EntryIn(_In):
    """A time, expense or material entry to approve; rates default to the line's price list."""

    transaction_class: Literal["time", "expense", "material"]
    project_id: UUID
    contract_line_id: UUID
    quantity: NonNegative
    billable_quantity: NonNegative | None = None
    cost_rate: NonNegative | None = None
    bill_rate: NonNegative | None = None
    document_date: date
    # Bounded like Dataverse's name columns; it also bounds an `actuals-created` message,
    # which carries up to 500 actuals and must stay under the producer's request size.
    resource: Name | None = None
    role: Name | None = None


class ActualOut(BaseModel):
    """An `msdyn_actual` with every key field and the accounting detail from Finance."""

    actual_id: UUID
    transaction_type: TransactionType
    transaction_class: TransactionClass
    billing_type: BillingType
    billing_status: BillingStatus | None
    adjustment_status: AdjustmentStatus
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    currency: str
    document_date: date
    accounting_date: date
    legal_entity: str
    project_id: UUID
    contract_id: UUID | None
    contract_line_id: UUID | None
    customer_id: UUID | None
    resource: str | None
    role: str | None
    invoice_id: UUID | None
    skip_sync: bool
    reverses_actual_id: UUID | None
    ready_to_invoice: bool
    milestone_id: UUID | None
    entry_id: UUID | None
    billing_method: BillingMethod | None
    unbilled_actual_id: UUID | None
    voucher: str | None = Field(description="msdyn_externalreference: Finance's voucher")
    voucher_date: date | None
    exchange_rate: Decimal | None
    accounting_currency_amount: Decimal | None
    tax_amount: Decimal | None
    created_at: datetime
    accounting_updated_at: datetime | None


class EntryOut(BaseModel):
    """An approved (or cancelled) entry and all its actuals."""

    entry_id: UUID
    actuals: list[ActualOut]


class EntryBatchIn(_In):
    """Entries to approve together."""

    entries: list[EntryIn] = Field(min_length=1, max_length=5000)


class EntryBatchOut(BaseModel):
    """The approved entries with their actuals."""

    entries: list[EntryOut]


def _entry_spec(body: EntryIn) -> commands.EntrySpec:
    return commands.EntrySpec(
        transaction_class=TransactionClass(body.transaction_class),
        project_id=body.project_id,
        contract_line_id=body.contract_line_id,
        quantity=body.quantity,
        billable_quantity=body.billable_quantity,
        cost_rate=body.cost_rate,
        bill_rate=body.bill_rate,
        document_date=body.document_date,
        resource=body.resource,
        role=body.role,
    )


class ActualIdsIn(_In):
    """Actuals to put in or take out of the billing backlog (all or none)."""

    actual_ids: list[UUID] = Field(min_length=1)


class ActualsOut(BaseModel):
    """Actuals changed by an operation."""

    actuals: list[ActualOut]


class InvoiceDateIn(_In):
    """The invoice date of a new (or corrective) invoice; today (UTC) when left out."""

    invoice_date: date | None = None


class DetailPatch(_In):
    """A draft detail's new quantity and/or billing type."""

    quantity: NonNegative | None = None
    billing_type: BillingType | None = None


class TaxIn(_In):
    """The invoice header's sales tax."""

    tax_amount: NonNegative


class DetailOut(BaseModel):
    """One invoice line detail: bills one actual or one milestone."""

    detail_id: UUID
    transaction_class: TransactionClass
    quantity: Decimal
    unit_price: Decimal
    billing_type: BillingType
    amount: Decimal
    chargeable_amount: Decimal
    actual_id: UUID | None
    milestone_id: UUID | None
    original_quantity: Decimal | None
    billed_actual_id: UUID | None
    resource: str | None
    role: str | None


class LineOut(BaseModel):
    """One invoice line (per contract line); amount = sum of chargeable details."""

    line_id: UUID
    contract_line_id: UUID
    amount: Decimal
    details: list[DetailOut]


class InvoiceOut(BaseModel):
    """A proforma invoice with lines, details and totals."""

    invoice_id: UUID
    invoice_number: str
    contract_id: UUID
    customer_id: UUID
    currency: str
    legal_entity: str
    invoice_date: date
    status: InvoiceStatus
    tax_amount: Decimal
    total_amount_excluding_tax: Decimal
    total_amount: Decimal
    is_corrective: bool
    corrects_invoice_id: UUID | None
    expected_billed_lines: int | None = Field(
        description="Billed-sales actuals Finance must expect; set when confirmed"
    )
    created_at: datetime
    confirmed_at: datetime | None
    lines: list[LineOut]


class RefusalOut(BaseModel):
    """An accounting update from Finance that could not be applied, with its reason."""

    id: int
    event_id: UUID
    source_event_id: UUID | None
    actual_id: UUID
    reason: str
    record: dict[str, Any]
    refused_at: datetime


# --------------------------------------------------------------------------------------------
# Conversions
# --------------------------------------------------------------------------------------------


def _detail_out(d: InvoiceLineDetail) -> DetailOut:
    return DetailOut(
        detail_id=d.detail_id,
        transaction_class=d.transaction_class,
        quantity=d.quantity,
        unit_price=d.unit_price,
        billing_type=d.billing_type,
        amount=d.amount,
        chargeable_amount=d.chargeable_amount,
        actual_id=d.actual_id,
        milestone_id=d.milestone_id,
        original_quantity=d.original_quantity,
        billed_actual_id=d.billed_actual_id,
        resource=d.resource,
        role=d.role,
    )


def invoice_out(stored: repo.StoredInvoice) -> InvoiceOut:
    """The API view of a stored invoice."""
    inv = stored.invoice
    return InvoiceOut(
        invoice_id=inv.invoice_id,
        invoice_number=stored.invoice_number,
        contract_id=inv.contract_id,
        customer_id=inv.customer_id,
        currency=inv.currency,
        legal_entity=inv.legal_entity,
        invoice_date=inv.invoice_date,
        status=inv.status,
        tax_amount=inv.tax_amount,
        total_amount_excluding_tax=inv.total_amount_excluding_tax,
        total_amount=inv.total_amount,
        is_corrective=inv.is_corrective,
        corrects_invoice_id=inv.corrects_invoice_id,
        expected_billed_lines=stored.expected_billed_lines,
        created_at=stored.created_at,
        confirmed_at=stored.confirmed_at,
        lines=[
            LineOut(
                line_id=line.line_id,
                contract_line_id=line.contract_line_id,
                amount=line.amount,
                details=[_detail_out(d) for d in line.details],
            )
            for line in inv.lines
        ],
    )


def _milestone_out(m: Milestone) -> MilestoneOut:
    return MilestoneOut(
        milestone_id=m.milestone_id,
        contract_id=m.contract_id,
        contract_line_id=m.contract_line_id,
        project_id=m.project_id,
        name=m.name,
        amount=m.amount,
        milestone_date=m.milestone_date,
        invoice_status=m.invoice_status,
    )


async def _contract_out(conn: DbConnection, contract_id: UUID) -> ContractOut:
    stored = await repo.get_contract(conn, contract_id)
    c = stored.contract
    return ContractOut(
        contract_id=c.contract_id,
        name=c.name,
        legal_entity=c.legal_entity,
        customer_id=c.customer_id,
        currency=c.currency,
        payment_terms=stored.payment_terms,
        created_at=stored.created_at,
        lines=[
            ContractLineOut(
                contract_line_id=line.contract_line_id,
                contract_id=line.contract_id,
                project_id=line.project_id,
                name=line.name,
                billing_method=line.billing_method,
                bill_rate=line.default_bill_rate,
                cost_rate=line.default_cost_rate,
                bill_rates=dict(line.bill_rates),
                cost_rates=dict(line.cost_rates),
            )
            for line in await repo.contract_lines_of(conn, contract_id)
        ],
    )


async def _actuals_out(conn: DbConnection, where: repo.ActualFilter) -> list[ActualOut]:
    return [ActualOut.model_validate(row) for row in await repo.list_actuals(conn, where)]


async def _actuals_by_ids(conn: DbConnection, ids: list[UUID]) -> list[ActualOut]:
    return [ActualOut.model_validate(await repo.get_actual_row(conn, a)) for a in ids]


async def _invoice(conn: DbConnection, invoice_id: UUID) -> InvoiceOut:
    return invoice_out(await repo.get_invoice(conn, invoice_id))


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


# --------------------------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------------------------


def _master_data_router() -> APIRouter:
    router = APIRouter(tags=["customers, projects, contracts"])

    @router.post("/accounts", status_code=201, dependencies=[SETUP], summary="Create a customer")
    async def create_account(body: AccountIn, conn: Conn) -> AccountOut:
        account_id = await commands.create_account(
            conn, name=body.name, legal_entity=body.legal_entity
        )
        return AccountOut.model_validate(await repo.get_account(conn, account_id))

    @router.get("/accounts", dependencies=[ANY_ROLE], summary="List customers")
    async def list_accounts(conn: Conn) -> list[AccountOut]:
        return [AccountOut.model_validate(a) for a in await repo.list_accounts(conn)]

    @router.get("/accounts/{account_id}", dependencies=[ANY_ROLE], summary="One customer")
    async def get_account(account_id: UUID, conn: Conn) -> AccountOut:
        return AccountOut.model_validate(await repo.get_account(conn, account_id))

    @router.post("/projects", status_code=201, dependencies=[SETUP], summary="Create a project")
    async def create_project(body: ProjectIn, conn: Conn) -> ProjectOut:
        project_id = await commands.create_project(
            conn, name=body.name, legal_entity=body.legal_entity, customer_id=body.customer_id
        )
        return ProjectOut.model_validate(await repo.get_project(conn, project_id))

    @router.get("/projects", dependencies=[ANY_ROLE], summary="List projects")
    async def list_projects(conn: Conn) -> list[ProjectOut]:
        return [ProjectOut.model_validate(p) for p in await repo.list_projects(conn)]

    @router.get("/projects/{project_id}", dependencies=[ANY_ROLE], summary="One project")
    async def get_project(project_id: UUID, conn: Conn) -> ProjectOut:
        return ProjectOut.model_validate(await repo.get_project(conn, project_id))

    @router.post("/contracts", status_code=201, dependencies=[SETUP], summary="Create a contract")
    async def create_contract(body: ContractIn, conn: Conn) -> ContractOut:
        contract_id = await commands.create_contract(
            conn,
            name=body.name,
            legal_entity=body.legal_entity,
            customer_id=body.customer_id,
            currency=body.currency,
            payment_terms=body.payment_terms,
            lines=[
                commands.ContractLineSpec(
                    name=line.name,
                    project_id=line.project_id,
                    billing_method=line.billing_method,
                    bill_rate=line.bill_rate,
                    cost_rate=line.cost_rate,
                    bill_rates=line.bill_rates,
                    cost_rates=line.cost_rates,
                )
                for line in body.lines
            ],
        )
        return await _contract_out(conn, contract_id)

    @router.get("/contracts", dependencies=[ANY_ROLE], summary="List contracts")
    async def list_contracts(conn: Conn) -> list[ContractOut]:
        return [
            await _contract_out(conn, c.contract.contract_id)
            for c in await repo.list_contracts(conn)
        ]

    @router.get("/contracts/{contract_id}", dependencies=[ANY_ROLE], summary="One contract")
    async def get_contract(contract_id: UUID, conn: Conn) -> ContractOut:
        return await _contract_out(conn, contract_id)

    return router


def _milestone_router() -> APIRouter:
    router = APIRouter(tags=["milestones"])

    @router.post(
        "/contracts/{contract_id}/milestones",
        status_code=201,
        dependencies=[PROJECT_MANAGER],
        summary="Add a milestone to a fixed-price contract line",
    )
    async def add_milestone(contract_id: UUID, body: MilestoneIn, conn: Conn) -> MilestoneOut:
        milestone_id = await commands.add_milestone(
            conn,
            contract_id=contract_id,
            contract_line_id=body.contract_line_id,
            name=body.name,
            amount=body.amount,
            milestone_date=body.milestone_date,
        )
        return _milestone_out(await repo.get_milestone(conn, milestone_id))

    @router.get(
        "/contracts/{contract_id}/milestones",
        dependencies=[ANY_ROLE],
        summary="A contract's milestones",
    )
    async def list_milestones(contract_id: UUID, conn: Conn) -> list[MilestoneOut]:
        await repo.get_contract(conn, contract_id)
        return [_milestone_out(m) for m in await repo.milestones_of_contract(conn, contract_id)]

    @router.get("/milestones/{milestone_id}", dependencies=[ANY_ROLE], summary="One milestone")
    async def get_milestone(milestone_id: UUID, conn: Conn) -> MilestoneOut:
        return _milestone_out(await repo.get_milestone(conn, milestone_id))

    @router.post(
        "/milestones/{milestone_id}/ready",
        dependencies=[PROJECT_MANAGER],
        summary="Mark a milestone ready to invoice",
    )
    async def milestone_ready(milestone_id: UUID, conn: Conn) -> MilestoneOut:
        return _milestone_out(await commands.set_milestone_ready(conn, milestone_id, True))

    @router.post(
        "/milestones/{milestone_id}/not-ready",
        dependencies=[PROJECT_MANAGER],
        summary="Take a milestone back to not ready",
    )
    async def milestone_not_ready(milestone_id: UUID, conn: Conn) -> MilestoneOut:
        return _milestone_out(await commands.set_milestone_ready(conn, milestone_id, False))

    return router


def _actuals_router() -> APIRouter:
    router = APIRouter(tags=["entries and actuals"])

    @router.post(
        "/entries/approve",
        status_code=201,
        dependencies=[PROJECT_MANAGER],
        summary="Approve a time, expense or material entry: cost and unbilled-sales actuals",
    )
    async def approve(body: EntryIn, request: Request, conn: Conn) -> EntryOut:
        entry_id, _ = await commands.approve_entry(conn, _settings(request), _entry_spec(body))
        actuals = await _actuals_out(conn, repo.ActualFilter(entry_id=entry_id))
        return EntryOut(entry_id=entry_id, actuals=actuals)

    @router.post(
        "/entries/approve-batch",
        status_code=201,
        dependencies=[PROJECT_MANAGER],
        summary="Approve many entries at once, all or none (for volume loads)",
    )
    async def approve_batch(body: EntryBatchIn, request: Request, conn: Conn) -> EntryBatchOut:
        entry_ids = []
        # One transaction: a refused entry leaves none of the batch behind.
        async with conn.transaction():
            for entry in body.entries:
                entry_id, _ = await commands.approve_entry(
                    conn, _settings(request), _entry_spec(entry)
                )
                entry_ids.append(entry_id)
        return EntryBatchOut(
            entries=[
                EntryOut(
                    entry_id=e, actuals=await _actuals_out(conn, repo.ActualFilter(entry_id=e))
                )
                for e in entry_ids
            ]
        )

    @router.post(
        "/entries/{entry_id}/cancel",
        dependencies=[PROJECT_MANAGER],
        summary="Cancel an approval: its actuals adjusted and reversed",
    )
    async def cancel(entry_id: UUID, request: Request, conn: Conn) -> EntryOut:
        await commands.cancel_entry(conn, _settings(request), entry_id)
        actuals = await _actuals_out(conn, repo.ActualFilter(entry_id=entry_id))
        return EntryOut(entry_id=entry_id, actuals=actuals)

    @router.post(
        "/actuals/ready",
        dependencies=[PROJECT_MANAGER],
        summary="Mark unbilled sales ready to invoice (billing backlog)",
    )
    async def ready(body: ActualIdsIn, conn: Conn) -> ActualsOut:
        await commands.set_ready_to_invoice(conn, body.actual_ids, True)
        return ActualsOut(actuals=await _actuals_by_ids(conn, body.actual_ids))

    @router.post(
        "/actuals/not-ready",
        dependencies=[PROJECT_MANAGER],
        summary="Take unbilled sales out of the billing backlog",
    )
    async def not_ready(body: ActualIdsIn, conn: Conn) -> ActualsOut:
        await commands.set_ready_to_invoice(conn, body.actual_ids, False)
        return ActualsOut(actuals=await _actuals_by_ids(conn, body.actual_ids))

    @router.get("/actuals", dependencies=[ANY_ROLE], summary="List actuals, filtered")
    async def list_actuals(
        conn: Conn,
        project_id: UUID | None = None,
        contract_id: UUID | None = None,
        invoice_id: UUID | None = None,
        entry_id: UUID | None = None,
        transaction_type: TransactionType | None = None,
        billing_status: BillingStatus | None = None,
    ) -> list[ActualOut]:
        return await _actuals_out(
            conn,
            repo.ActualFilter(
                project_id=project_id,
                contract_id=contract_id,
                invoice_id=invoice_id,
                entry_id=entry_id,
                transaction_type=transaction_type,
                billing_status=billing_status,
            ),
        )

    # `:uuid` so that `GET /actuals/ready` is the undeclared method of `POST /actuals/ready`
    # (405), not a malformed actual id.
    @router.get("/actuals/{actual_id:uuid}", dependencies=[ANY_ROLE], summary="One actual")
    async def get_actual(actual_id: UUID, conn: Conn) -> ActualOut:
        return ActualOut.model_validate(await repo.get_actual_row(conn, actual_id))

    return router


def _invoice_router() -> APIRouter:
    router = APIRouter(tags=["proforma invoices"])

    @router.post(
        "/contracts/{contract_id}/invoices",
        status_code=201,
        dependencies=[PROJECT_MANAGER],
        summary="Create a draft proforma invoice from what is ready to invoice",
    )
    async def create_invoice(
        contract_id: UUID, conn: Conn, body: InvoiceDateIn | None = None
    ) -> InvoiceOut:
        invoice_date = (body.invoice_date if body else None) or commands.today()
        invoice_id = await commands.create_invoice(conn, contract_id, invoice_date)
        return await _invoice(conn, invoice_id)

    @router.get("/invoices", dependencies=[ANY_ROLE], summary="List invoices")
    async def list_invoices(
        conn: Conn,
        status: InvoiceStatus | None = None,
        contract_id: UUID | None = None,
    ) -> list[InvoiceOut]:
        stored = await repo.list_invoices(conn, status=status, contract_id=contract_id)
        return [invoice_out(s) for s in stored]

    @router.get("/invoices/{invoice_id}", dependencies=[ANY_ROLE], summary="One invoice")
    async def get_invoice(invoice_id: UUID, conn: Conn) -> InvoiceOut:
        return await _invoice(conn, invoice_id)

    @router.delete(
        "/invoices/{invoice_id}",
        status_code=204,
        dependencies=[PROJECT_MANAGER],
        summary="Delete a draft; what it held goes back to the backlog",
    )
    async def delete_invoice(invoice_id: UUID, conn: Conn) -> Response:
        await commands.delete_invoice(conn, invoice_id)
        return Response(status_code=204)

    @router.patch(
        "/invoices/{invoice_id}/details/{detail_id}",
        dependencies=[PROJECT_MANAGER],
        summary="Edit a draft detail's quantity and/or billing type",
    )
    async def edit_detail(
        invoice_id: UUID, detail_id: UUID, body: DetailPatch, conn: Conn
    ) -> InvoiceOut:
        saved = await commands.edit_detail(
            conn, invoice_id, detail_id, quantity=body.quantity, billing_type=body.billing_type
        )
        return invoice_out(saved)

    @router.delete(
        "/invoices/{invoice_id}/details/{detail_id}",
        dependencies=[PROJECT_MANAGER],
        summary="Delete a draft detail; its actual or milestone goes back to the backlog",
    )
    async def delete_detail(invoice_id: UUID, detail_id: UUID, conn: Conn) -> InvoiceOut:
        return invoice_out(await commands.delete_detail(conn, invoice_id, detail_id))

    @router.post(
        "/invoices/{invoice_id}/review",
        dependencies=[PROJECT_MANAGER],
        summary="Submit a draft for review",
    )
    async def review(invoice_id: UUID, conn: Conn) -> InvoiceOut:
        return invoice_out(await commands.submit_for_review(conn, invoice_id))

    @router.post(
        "/invoices/{invoice_id}/return-to-draft",
        dependencies=[PROJECT_MANAGER],
        summary="Take an invoice in review back to draft",
    )
    async def to_draft(invoice_id: UUID, conn: Conn) -> InvoiceOut:
        return invoice_out(await commands.return_to_draft(conn, invoice_id))

    @router.put(
        "/invoices/{invoice_id}/tax",
        dependencies=[PROJECT_MANAGER],
        summary="Set the invoice's sales tax",
    )
    async def set_tax(invoice_id: UUID, body: TaxIn, conn: Conn) -> InvoiceOut:
        return invoice_out(await commands.set_tax(conn, invoice_id, body.tax_amount))

    @router.post(
        "/invoices/{invoice_id}/confirm",
        dependencies=[PROJECT_MANAGER],
        summary="Confirm: billing actuals, header and actuals sent to Finance; final",
    )
    async def confirm(invoice_id: UUID, request: Request, conn: Conn) -> InvoiceOut:
        return invoice_out(await commands.confirm_invoice(conn, _settings(request), invoice_id))

    @router.post(
        "/invoices/{invoice_id}/correct",
        status_code=201,
        dependencies=[PROJECT_MANAGER],
        summary="Start a corrective draft of a confirmed invoice (details at quantity 0)",
    )
    async def correct(
        invoice_id: UUID, conn: Conn, body: InvoiceDateIn | None = None
    ) -> InvoiceOut:
        invoice_date = (body.invoice_date if body else None) or commands.today()
        corrective_id = await commands.correct_invoice(conn, invoice_id, invoice_date)
        return await _invoice(conn, corrective_id)

    return router


def _accounting_router() -> APIRouter:
    router = APIRouter(tags=["accounting detail from Finance"])

    @router.get(
        "/accounting-refusals",
        dependencies=[ANY_ROLE],
        summary="Accounting updates from Finance that could not be applied, with the reason",
    )
    async def refusals(conn: Conn) -> list[RefusalOut]:
        return [RefusalOut.model_validate(r) for r in await repo.list_refusals(conn)]

    return router


def build_app() -> FastAPI:
    """The Dataverse API; the service runner sets `app.state` (pool, settings, relay, ...)."""
    app = create_app(
        "dwsim Dataverse",
        "Project side of the Project Operations invoice integration: customers, projects, "
        "contracts, approvals and actuals, billing backlog, proforma invoices, confirmation "
        "and corrections.",
    )
    app.include_router(_master_data_router())
    app.include_router(_milestone_router())
    app.include_router(_actuals_router())
    app.include_router(_invoice_router())
    app.include_router(_accounting_router())
    return app
