"""Finance's HTTP API: legal entity setup, staging, import, journals, proposals, posting, ledger.

A route parses its request, calls one use case (`commands`, `importer`, `posting`) or a read of
`repository`, and shapes the answer with a response model of `views`.

Roles by bearer token: the project accountant sets up legal entities, runs the import and posts
journals; the receivables clerk posts proposals; any known role reads. Bodies that do not
validate get 422 naming the field; a business rule that refuses gets 409 (405 for creating or
deleting a proposal, which only Dataverse may do); in both cases nothing is written.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Body, Depends, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from schemas.decimal_text import POSITIVE, DecimalText
from schemas.vocabulary import BillingType
from services.common.api import ErrorOut, connection, create_app
from services.common.auth import Role, require_role
from services.common.db import DbConnection
from services.common.errors import OneWayViolation
from services.common.logging import get_logger
from services.finance import commands, repository, views
from services.finance.domain import (
    EDITABLE_HEADER_FIELDS,
    refuse_proposal_create,
    refuse_proposal_delete,
)
from services.finance.importer import import_from_staging
from services.finance.posting import post_all_journals, post_journal, post_proposal_invoice
from services.finance.views import (
    ContractFixedRateOut,
    CustomerInvoiceOut,
    ImportSummaryOut,
    JournalDetailOut,
    JournalOut,
    JournalPostingOut,
    LedgerEntryOut,
    LegalEntityOut,
    ProposalDetailOut,
    ProposalOut,
    RefusedRecordOut,
    StagingCount,
    StagingRowOut,
    VoucherOut,
)

log = get_logger(__name__)

ACCOUNTANT = require_role(Role.ACCOUNTANT)
CLERK = require_role(Role.RECEIVABLES_CLERK)
FINANCE_STAFF = require_role(Role.ACCOUNTANT, Role.RECEIVABLES_CLERK)
ANY_ROLE = require_role(*Role)
CONN = Depends(connection)

# Billing types as the API accepts them: dwsim's vocabulary or the staging table's labels.
_BILLING_TYPE_NAMES: dict[str, BillingType] = {
    **{str(bt): bt for bt in BillingType},
    "Chargeable": BillingType.CHARGEABLE,
    "NonChargeable": BillingType.NON_CHARGEABLE,
    "Complimentary": BillingType.COMPLIMENTARY,
}

Currency = Field(pattern=r"^[A-Z]{3}$", description="ISO currency code, e.g. USD")


class LegalEntityBody(BaseModel):
    """Setup of one legal entity; absent fields keep their value."""

    model_config = ConfigDict(extra="forbid")

    accounting_currency: str = Currency
    line_properties: dict[str, str] | None = Field(
        default=None,
        description="billing type -> line property; replaces the whole mapping. A new legal "
        "entity without it gets Chargeable/NonChargeable/NonChargeable.",
        json_schema_extra={
            "propertyNames": {"enum": list(_BILLING_TYPE_NAMES)},
            "additionalProperties": {"type": "string", "pattern": r"\S"},
        },
    )
    move_to_next_open_period: StrictBool | None = None
    fiscal_year: int | None = Field(
        default=None, ge=1900, le=2999, description="creates its 12 open monthly periods"
    )

    @field_validator("line_properties")
    @classmethod
    def _known_billing_types(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        mapping: dict[str, str] = {}
        for name, line_property in value.items():
            billing_type = _BILLING_TYPE_NAMES.get(name)
            if billing_type is None:
                raise ValueError(
                    f"unknown billing type {name!r}; use one of "
                    + ", ".join(str(bt) for bt in BillingType)
                )
            if not line_property.strip():
                raise ValueError(f"line property of {name} is empty")
            mapping[str(billing_type)] = line_property
        return mapping


class ExchangeRateBody(BaseModel):
    """One rate: `rate` accounting-currency units per `from_currency` unit from `valid_from`."""

    model_config = ConfigDict(extra="forbid")

    from_currency: str = Currency
    to_currency: str = Currency
    valid_from: date
    rate: Annotated[Decimal, Field(gt=0, allow_inf_nan=False), DecimalText(POSITIVE)]


class FiscalPeriodBody(BaseModel):
    """Open or close a period."""

    model_config = ConfigDict(extra="forbid")

    closed: StrictBool


class ImportBody(BaseModel):
    """Import everything, or one proposal's lines only."""

    model_config = ConfigDict(extra="forbid")

    proposal_id: UUID | None = None


class PostJournalsBody(BaseModel):
    """Post every unposted journal, or those of one legal entity."""

    model_config = ConfigDict(extra="forbid")

    legal_entity: str | None = None


class PostProposalBody(BaseModel):
    """Posting date; defaults to the proposal's invoice date."""

    model_config = ConfigDict(extra="forbid")

    posting_date: date | None = None


class ProposalEditBody(BaseModel):
    """Header edits Finance allows; they stay in Finance (the proposal map is one way)."""

    model_config = ConfigDict(extra="forbid")

    proposal_id: UUID | None = Field(
        default=None, description="may only repeat the proposal's own id: re-keying is refused"
    )
    sales_tax_group: str | None = None
    payment_terms: str | None = None


def _one_way_refusal(exc: OneWayViolation) -> JSONResponse:
    log.warning("one_way_violation_refused", reason=str(exc))
    return JSONResponse(
        status_code=405,
        content={"detail": str(exc), "rule": type(exc).__name__},
        headers={"Allow": "GET, PATCH"},
    )


def build_app() -> FastAPI:
    """The Finance API (state: pool and settings are set by the service runner or a test)."""
    app = create_app(
        "dwsim Finance",
        "The ERP side of the Project Operations integration: legal entity setup, actuals "
        "staging, import from staging, integration journals, project invoice proposals, "
        "customer invoices, vouchers and the ledger.",
    )
    app.include_router(_setup_router())
    app.include_router(_staging_router())
    app.include_router(_journal_router())
    app.include_router(_proposal_router())
    app.include_router(_ledger_router())
    app.include_router(_contract_router())
    return app


# --- setup ----------------------------------------------------------------------------------------


def _setup_router() -> APIRouter:
    router = APIRouter(prefix="/legal-entities", tags=["legal entity setup"])

    @router.put("/{legal_entity_id}", summary="Create or update a legal entity's setup")
    async def put_legal_entity(
        legal_entity_id: str,
        body: LegalEntityBody,
        conn: DbConnection = CONN,
        _: Role = ACCOUNTANT,
    ) -> LegalEntityOut:
        setup = await commands.set_up_legal_entity(
            conn,
            legal_entity_id,
            accounting_currency=body.accounting_currency,
            line_properties=body.line_properties,
            move_to_next_open_period=body.move_to_next_open_period,
            fiscal_year=body.fiscal_year,
        )
        return views.legal_entity_out(setup)

    @router.post("/{legal_entity_id}/exchange-rates", summary="Add or replace an exchange rate")
    async def post_exchange_rate(
        legal_entity_id: str,
        body: ExchangeRateBody,
        conn: DbConnection = CONN,
        _: Role = ACCOUNTANT,
    ) -> LegalEntityOut:
        setup = await commands.add_exchange_rate(
            conn,
            legal_entity_id,
            from_currency=body.from_currency,
            to_currency=body.to_currency,
            valid_from=body.valid_from,
            rate=body.rate,
        )
        return views.legal_entity_out(setup)

    @router.put("/{legal_entity_id}/fiscal-periods/{period}", summary="Open or close a period")
    async def put_fiscal_period(
        legal_entity_id: str,
        body: FiscalPeriodBody,
        period: str = Path(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM"),
        conn: DbConnection = CONN,
        _: Role = ACCOUNTANT,
    ) -> LegalEntityOut:
        year, month = (int(part) for part in period.split("-"))
        setup = await commands.set_fiscal_period(
            conn, legal_entity_id, year=year, month=month, closed=body.closed
        )
        return views.legal_entity_out(setup)

    @router.get("", summary="Every legal entity with its setup")
    async def list_legal_entities(
        conn: DbConnection = CONN, _: Role = ANY_ROLE
    ) -> list[LegalEntityOut]:
        setups = await repository.load_setups(conn)
        return [views.legal_entity_out(setups[k]) for k in sorted(setups)]

    @router.get("/{legal_entity_id}", summary="One legal entity with its setup")
    async def get_legal_entity(
        legal_entity_id: str, conn: DbConnection = CONN, _: Role = ANY_ROLE
    ) -> LegalEntityOut:
        return views.legal_entity_out(await commands.legal_entity_setup(conn, legal_entity_id))

    return router


# --- staging and import ---------------------------------------------------------------------------


def _staging_router() -> APIRouter:
    router = APIRouter(tags=["actuals staging and import"])

    @router.get("/staging", summary="Staged actuals, with why each is not imported")
    async def list_staging(
        legal_entity: str | None = None,
        invoice_id: UUID | None = None,
        imported: bool | None = None,
        status: Literal["valid", "invalid"] | None = None,
        transaction_type: Literal["cost", "unbilled_sales", "billed_sales"] | None = None,
        conn: DbConnection = CONN,
        _: Role = ANY_ROLE,
    ) -> list[StagingRowOut]:
        rows = await repository.list_staging(
            conn,
            legal_entity,
            str(invoice_id) if invoice_id else None,
            imported,
            status,
            transaction_type,
        )
        return [views.staging_out(r) for r in rows]

    @router.get(
        "/staging/count",
        summary="How many staged actuals match (same filters), and when the last one arrived",
    )
    async def count_staging(
        legal_entity: str | None = None,
        invoice_id: UUID | None = None,
        imported: bool | None = None,
        status: Literal["valid", "invalid"] | None = None,
        transaction_type: Literal["cost", "unbilled_sales", "billed_sales"] | None = None,
        conn: DbConnection = CONN,
        _: Role = ANY_ROLE,
    ) -> StagingCount:
        count, last_received_at = await repository.count_staging(
            conn,
            legal_entity,
            str(invoice_id) if invoice_id else None,
            imported,
            status,
            transaction_type,
        )
        return StagingCount(count=count, last_received_at=last_received_at)

    @router.get("/refused-records", summary="Records Finance refused (e.g. unknown legal entity)")
    async def list_refused(conn: DbConnection = CONN, _: Role = ANY_ROLE) -> list[RefusedRecordOut]:
        return [
            RefusedRecordOut.model_validate(dict(r)) for r in await repository.list_refused(conn)
        ]

    @router.post("/import", summary="Run import from staging now (all, or one proposal)")
    async def run_import(
        request: Request,
        body: ImportBody | None = Body(default=None),  # noqa: B008
        _: Role = ACCOUNTANT,
    ) -> ImportSummaryOut:
        proposal_id = str(body.proposal_id) if body and body.proposal_id else None
        summary = await import_from_staging(
            request.app.state.pool, request.app.state.settings, proposal_id
        )
        return views.import_summary_out(summary)

    return router


# --- integration journals -------------------------------------------------------------------------


def _journal_router() -> APIRouter:
    router = APIRouter(prefix="/journals", tags=["integration journals"])

    @router.get("", summary="Integration journals")
    async def list_journals(
        status: Literal["draft", "posted", "error"] | None = None,
        legal_entity: str | None = None,
        conn: DbConnection = CONN,
        _: Role = ANY_ROLE,
    ) -> list[JournalOut]:
        rows = await repository.list_journals(conn, status, legal_entity)
        return [JournalOut.model_validate(dict(r)) for r in rows]

    @router.post("/post", summary="Post every unposted integration journal")
    async def post_journals(
        request: Request,
        body: PostJournalsBody | None = Body(default=None),  # noqa: B008
        _: Role = ACCOUNTANT,
    ) -> list[JournalPostingOut]:
        postings = await post_all_journals(
            request.app.state.pool,
            request.app.state.settings,
            body.legal_entity if body else None,
        )
        return [views.journal_posting_out(p) for p in postings]

    @router.get("/{journal_id}", summary="One integration journal with its lines")
    async def get_journal(
        journal_id: str, conn: DbConnection = CONN, _: Role = ANY_ROLE
    ) -> JournalDetailOut:
        header = await repository.get_journal_row(conn, journal_id)
        return views.journal_out(header, await repository.journal_line_rows(conn, journal_id))

    @router.post("/{journal_id}/post", summary="Post one integration journal")
    async def post_one_journal(
        journal_id: str, request: Request, conn: DbConnection = CONN, _: Role = ACCOUNTANT
    ) -> JournalPostingOut:
        posting = await post_journal(conn, request.app.state.settings, journal_id)
        return views.journal_posting_out(posting)

    return router


# --- proposals ------------------------------------------------------------------------------------


def _proposal_router() -> APIRouter:
    router = APIRouter(prefix="/proposals", tags=["project invoice proposals"])

    @router.get("", summary="Project invoice proposals")
    async def list_proposals(
        status: Literal["open", "lines_imported", "posted"] | None = None,
        conn: DbConnection = CONN,
        _: Role = ANY_ROLE,
    ) -> list[ProposalOut]:
        return [views.proposal_out(r) for r in await repository.list_proposals(conn, status)]

    @router.post(
        "",
        summary="Refused: proposals come only from confirmed Dataverse invoices",
        status_code=405,
    )
    async def create_proposal(_: Role = FINANCE_STAFF) -> JSONResponse:
        try:
            refuse_proposal_create("(new)")
        except OneWayViolation as exc:
            return _one_way_refusal(exc)

    @router.get("/{proposal_id}", summary="One proposal: header, lines, status, waiting reason")
    async def get_proposal(
        proposal_id: UUID, conn: DbConnection = CONN, _: Role = ANY_ROLE
    ) -> ProposalDetailOut:
        header = await repository.get_proposal(conn, str(proposal_id))
        lines = await repository.proposal_line_rows(conn, str(proposal_id))
        return views.proposal_detail_out(header, lines)

    @router.delete(
        "/{proposal_id}",
        summary="Refused: proposals come only from confirmed Dataverse invoices",
        status_code=405,
    )
    async def delete_proposal(proposal_id: UUID, _: Role = FINANCE_STAFF) -> JSONResponse:
        try:
            refuse_proposal_delete(str(proposal_id))
        except OneWayViolation as exc:
            return _one_way_refusal(exc)

    @router.patch("/{proposal_id}", summary="Edit header fields Finance owns (stay in Finance)")
    async def patch_proposal(
        proposal_id: UUID,
        body: ProposalEditBody,
        request: Request,
        conn: DbConnection = CONN,
        _: Role = FINANCE_STAFF,
    ) -> ProposalOut:
        return await _edit_header(conn, request, proposal_id, body, replace_whole=False)

    @router.put(
        "/{proposal_id}",
        summary="Replace the Finance-owned header fields; never creates nor re-keys",
        response_model=ProposalOut,
        responses={405: {"model": ErrorOut, "description": "No such proposal: never created"}},
    )
    async def put_proposal(
        proposal_id: UUID,
        body: ProposalEditBody,
        request: Request,
        conn: DbConnection = CONN,
        _: Role = FINANCE_STAFF,
    ) -> ProposalOut | JSONResponse:
        # Checked apart from the edit: a proposal that never came is 405 (domain rule 1), where
        # a re-key inside the edit is the 409 of any refused rule.
        if not await repository.proposal_exists(conn, str(proposal_id)):
            try:
                refuse_proposal_create(str(proposal_id))
            except OneWayViolation as exc:
                return _one_way_refusal(exc)
        return await _edit_header(conn, request, proposal_id, body, replace_whole=True)

    @router.post("/{proposal_id}/post", summary="Post the proposal as a customer invoice")
    async def post_proposal(
        proposal_id: UUID,
        request: Request,
        body: PostProposalBody | None = Body(default=None),  # noqa: B008
        conn: DbConnection = CONN,
        _: Role = CLERK,
    ) -> CustomerInvoiceOut:
        number = await post_proposal_invoice(
            conn,
            request.app.state.settings,
            str(proposal_id),
            body.posting_date if body else None,
        )
        return _customer_invoice(await repository.get_customer_invoice(conn, number))

    return router


async def _edit_header(
    conn: DbConnection,
    request: Request,
    proposal_id: UUID,
    body: ProposalEditBody,
    replace_whole: bool,
) -> ProposalOut:
    """PATCH edits the fields given; PUT replaces every Finance-owned field (absent: null)."""
    given = set(EDITABLE_HEADER_FIELDS) if replace_whole else body.model_fields_set
    requested = {name: getattr(body, name) for name in EDITABLE_HEADER_FIELDS if name in given}
    record = await commands.edit_proposal_header(
        conn,
        request.app.state.settings,
        proposal_id,
        requested,
        new_proposal_id=body.proposal_id,
    )
    return views.proposal_out(record)


# --- posted documents -----------------------------------------------------------------------------


def _ledger_router() -> APIRouter:
    router = APIRouter(tags=["customer invoices, vouchers and ledger"])

    @router.get("/customer-invoices", summary="Posted customer invoices")
    async def list_customer_invoices(
        conn: DbConnection = CONN, _: Role = ANY_ROLE
    ) -> list[CustomerInvoiceOut]:
        return [_customer_invoice(r) for r in await repository.list_customer_invoices(conn)]

    @router.get("/customer-invoices/{invoice_number}", summary="One posted customer invoice")
    async def get_customer_invoice(
        invoice_number: str, conn: DbConnection = CONN, _: Role = ANY_ROLE
    ) -> CustomerInvoiceOut:
        return _customer_invoice(await repository.get_customer_invoice(conn, invoice_number))

    @router.get("/vouchers/{voucher}", summary="One voucher with its ledger entries")
    async def get_voucher(
        voucher: str, conn: DbConnection = CONN, _: Role = ANY_ROLE
    ) -> VoucherOut:
        header = await repository.get_voucher(conn, voucher)
        return views.voucher_out(header, await repository.ledger_entries(conn, voucher=voucher))

    @router.get("/ledger", summary="Ledger entries, by voucher and/or account")
    async def get_ledger(
        voucher: str | None = Query(default=None),
        account: str | None = Query(default=None),
        conn: DbConnection = CONN,
        _: Role = ANY_ROLE,
    ) -> list[LedgerEntryOut]:
        entries = await repository.ledger_entries(conn, voucher, account)
        return [LedgerEntryOut.model_validate(dict(e)) for e in entries]

    return router


def _customer_invoice(record: views.Row) -> CustomerInvoiceOut:
    return CustomerInvoiceOut.model_validate(dict(record))


# --- project contracts: fixed exchange rate -------------------------------------------------------
# Kept apart from the routers above: the use cases are in `commands.py`.


class ContractFixedRateBody(BaseModel):
    """A project contract's fixed rate: `rate` units of the legal entity's accounting currency
    per unit of the contract currency (domain rule 5)."""

    model_config = ConfigDict(extra="forbid")

    legal_entity: str = Field(
        min_length=1, max_length=64, description="the contract's legal entity, e.g. USMF"
    )
    contract_currency: str = Currency
    # As the exchange-rate table's rate: positive, finite, its string form a plain decimal.
    rate: Annotated[
        Decimal,
        Field(
            gt=0,
            allow_inf_nan=False,
            description="accounting-currency units per contract-currency unit, e.g. 1.25",
        ),
        DecimalText(POSITIVE),
    ]


def _contract_router() -> APIRouter:
    router = APIRouter(prefix="/contracts", tags=["project contracts"])

    @router.put(
        "/{contract_id}/fixed-exchange-rate",
        summary="Set or change a project contract's fixed exchange rate",
        responses={
            404: {"description": "no such record"},
            409: {"description": "a rule refused the rate (unknown legal entity, currency)"},
        },
    )
    async def put_fixed_rate(
        contract_id: UUID,
        body: ContractFixedRateBody,
        conn: DbConnection = CONN,
        _: Role = ACCOUNTANT,
    ) -> ContractFixedRateOut:
        stored = await commands.set_contract_fixed_rate(
            conn,
            str(contract_id),
            legal_entity=body.legal_entity,
            contract_currency=body.contract_currency,
            rate=body.rate,
        )
        return views.fixed_rate_out(stored)

    @router.get(
        "/{contract_id}/fixed-exchange-rate",
        summary="A project contract's fixed exchange rate",
        responses={404: {"description": "the contract has no fixed exchange rate"}},
    )
    async def get_fixed_rate(
        contract_id: UUID, conn: DbConnection = CONN, _: Role = ANY_ROLE
    ) -> ContractFixedRateOut:
        return views.fixed_rate_out(await commands.contract_fixed_rate(conn, str(contract_id)))

    @router.delete(
        "/{contract_id}/fixed-exchange-rate",
        summary="Remove a project contract's fixed rate (the exchange-rate table applies again)",
        status_code=204,
        responses={404: {"description": "the contract has no fixed exchange rate"}},
    )
    async def delete_fixed_rate(
        contract_id: UUID, conn: DbConnection = CONN, _: Role = ACCOUNTANT
    ) -> None:
        await commands.remove_contract_fixed_rate(conn, str(contract_id))

    return router
