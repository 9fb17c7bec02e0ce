"""Reads what each side holds through its API, normalised for `reconcile`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

from services.simulator.clients import ApiError, Services
from services.simulator.reconcile import (
    Actual,
    BridgeRecord,
    ConfirmedInvoice,
    CustomerInvoice,
    FilteredRows,
    JournalLine,
    OverLimitTransaction,
    Proposal,
    ProposalLine,
    Snapshot,
    StagingRow,
    scoped,
)


def _dec(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)


def _dec_or_none(value: Any) -> Decimal | None:
    return Decimal(str(value)) if value is not None else None


def _date_or_none(value: Any) -> date | None:
    return date.fromisoformat(str(value)[:10]) if value else None


def _str_or_none(value: Any) -> str | None:
    return str(value) if value is not None else None


def actual_from_json(a: dict[str, Any]) -> Actual:
    """A Dataverse actual as the API shows it."""
    return Actual(
        actual_id=str(a["actual_id"]),
        transaction_type=str(a["transaction_type"]),
        billing_type=str(a["billing_type"]),
        quantity=_dec(a["quantity"]),
        amount=_dec(a["amount"]),
        currency=str(a["currency"]),
        invoice_id=_str_or_none(a.get("invoice_id")),
        skip_sync=bool(a.get("skip_sync")),
        voucher=a.get("voucher") or None,
        voucher_date=_date_or_none(a.get("voucher_date")),
        accounting_currency_amount=_dec_or_none(a.get("accounting_currency_amount")),
    )


def staging_row_from_json(row: dict[str, Any]) -> StagingRow:
    """A Finance staged row as the API shows it."""
    return StagingRow(
        actual_id=str(row["actual_id"]),
        transaction_type=str(row["transaction_type"]),
        billing_type=_str_or_none(row.get("billing_type")),
        quantity=_dec(row["quantity"]),
        amount=_dec(row["amount"]),
        currency=str(row["currency"]),
        invoice_id=_str_or_none(row.get("invoice_id")),
        imported=bool(row.get("imported")),
        reason=row.get("reason") or row.get("invalid_reason"),
        journal_id=_str_or_none(row.get("journal_id")),
        voucher=row.get("voucher") or None,
        voucher_date=_date_or_none(row.get("voucher_date")),
        accounting_currency_amount=_dec_or_none(row.get("accounting_currency_amount")),
    )


def proposal_from_json(detail: dict[str, Any]) -> Proposal:
    """A Finance proposal with its lines as the API shows it."""
    return Proposal(
        proposal_id=str(detail["proposal_id"]),
        currency=str(detail["currency"]),
        tax_amount=_dec(detail.get("tax_amount")),
        status=str(detail.get("status")),
        lines=tuple(
            ProposalLine(
                actual_id=str(line["actual_id"]),
                quantity=_dec(line["quantity"]),
                amount=_dec(line["amount"]),
                currency=str(line["currency"]),
                billing_type=str(line["billing_type"]),
            )
            for line in detail.get("lines") or []
        ),
        waiting_reason=detail.get("waiting_reason"),
        invoice_number=detail.get("invoice_number"),
    )


def confirmed_invoice_from_json(inv: dict[str, Any]) -> ConfirmedInvoice:
    """A confirmed Dataverse proforma invoice's header as the API shows it."""
    return ConfirmedInvoice(
        invoice_id=str(inv["invoice_id"]),
        legal_entity=str(inv["legal_entity"]),
        currency=str(inv["currency"]),
        net_amount=_dec(inv["total_amount_excluding_tax"]),
        tax_amount=_dec(inv["tax_amount"]),
        expected_billed_lines=int(inv.get("expected_billed_lines") or 0),
    )


def customer_invoice_from_json(c: dict[str, Any]) -> CustomerInvoice:
    """A Finance posted customer invoice as the API shows it."""
    return CustomerInvoice(
        invoice_number=str(c["invoice_number"]),
        proposal_id=str(c["proposal_id"]),
        currency=str(c["currency"]),
        net_amount=_dec(c["net_amount"]),
        tax_amount=_dec(c["tax_amount"]),
        total_amount=_dec(c["total_amount"]),
        voucher=str(c["voucher"]),
    )


async def _journal_lines(services: Services, legal_entity: str | None = None) -> list[JournalLine]:
    lines: list[JournalLine] = []
    for journal in await services.finance.get("/journals", legal_entity=legal_entity):
        detail = await services.finance.get(f"/journals/{journal['journal_id']}")
        lines += [
            JournalLine(
                journal_id=str(journal["journal_id"]),
                actual_id=str(line["actual_id"]),
                quantity=_dec(line["quantity"]),
                amount=_dec(line["amount"]),
                currency=str(line["currency"]),
                voucher=line.get("voucher") or None,
            )
            for line in detail.get("lines") or []
        ]
    return lines


async def _over_limit_transactions(services: Services) -> tuple[OverLimitTransaction, ...]:
    """The source transactions past Microsoft's limits (none when the bridge does not answer)."""
    try:
        rows = await services.bridge.get("/platform-limits")
    except ApiError:
        rows = []
    return tuple(
        OverLimitTransaction(
            transaction_id=str(r["transaction_id"]),
            invoice_id=str(r["invoice_id"]) if r.get("invoice_id") else None,
            records=int(r["records"]),
            outcome=str(r["outcome"]),
            breach=str(r["breach"]),
        )
        for r in rows
    )


async def _filtered_view(services: Services) -> tuple[FilteredRows, ...]:
    """The bridge's counts of filtered source rows (none when the bridge does not answer)."""
    try:
        rows = await services.bridge.get("/filtered", limit=100_000)
    except ApiError:
        return ()
    return tuple(
        FilteredRows(
            map_name=str(r["map_name"]),
            leg_name=str(r["leg_name"]),
            invoice_id=str(r["invoice_id"]) if r.get("invoice_id") else None,
            reason=str(r["reason"]),
            source_rows=int(r["source_rows"]),
        )
        for r in rows
    )


async def _bridge_view(services: Services) -> tuple[tuple[BridgeRecord, ...], tuple[str, ...]]:
    """The bridge's records and its paused maps (none when the bridge does not answer)."""
    try:
        raw_records = await services.bridge.get("/records", limit=100_000)
        maps = await services.bridge.get("/maps")
    except ApiError:
        raw_records, maps = [], []
    records = tuple(
        BridgeRecord(
            record_key=str(r.get("record_key")),
            invoice_id=str(r["invoice_id"]) if r.get("invoice_id") else None,
            map_name=str(r.get("map_name")),
            status=str(r.get("status")),
            reason=r.get("reason"),
            attempts=int(r.get("attempts") or 1),
            target_topic=str(r.get("target_topic") or ""),
        )
        for r in raw_records
    )
    return records, tuple(m["name"] for m in maps if m.get("state") == "paused")


async def fetch_snapshot(services: Services) -> Snapshot:
    """Dataverse's confirmed invoices and actuals; Finance's proposals with their lines, staged
    rows, journal lines and customer invoices; the bridge's record statuses.

    The sides are read one after the other, not at one instant: on a settled stack that makes
    no difference; under load, a record created between the reads can show as a difference.
    """
    invoices = tuple(
        confirmed_invoice_from_json(inv)
        for inv in await services.dataverse.get("/invoices", status="confirmed")
    )
    actuals = tuple(actual_from_json(a) for a in await services.dataverse.get("/actuals"))
    proposals = []
    for summary in await services.finance.get("/proposals"):
        detail = await services.finance.get(f"/proposals/{summary['proposal_id']}")
        proposals.append(proposal_from_json(detail))
    staging = tuple(staging_row_from_json(r) for r in await services.finance.get("/staging"))
    customer_invoices = tuple(
        customer_invoice_from_json(c) for c in await services.finance.get("/customer-invoices")
    )
    records, paused = await _bridge_view(services)
    return Snapshot(
        invoices=invoices,
        proposals=tuple(proposals),
        actuals=actuals,
        staging_rows=staging,
        journal_lines=tuple(await _journal_lines(services)),
        customer_invoices=customer_invoices,
        bridge_records=records,
        paused_maps=paused,
        over_limit_transactions=await _over_limit_transactions(services),
        filtered=await _filtered_view(services),
    )


async def fetch_snapshot_of(
    services: Services, legal_entity: str, contract_ids: Iterable[str], project_ids: Iterable[str]
) -> Snapshot:
    """The part of the sides that one legal entity's contracts and projects make (what one test
    of the pytest plugin created): their confirmed invoices, the actuals of their projects, and
    on Finance's side only what concerns those (`reconcile.scoped`).

    Reads per contract, per project, per proposal and per legal entity, so its cost follows the
    test's own records, not everything the shared stack holds; only the customer invoices and
    the bridge's records are read whole.
    """
    invoices = [
        confirmed_invoice_from_json(inv)
        for contract_id in contract_ids
        for inv in await services.dataverse.get(
            "/invoices", status="confirmed", contract_id=contract_id
        )
    ]
    actuals = [
        actual_from_json(a)
        for project_id in project_ids
        for a in await services.dataverse.get("/actuals", project_id=project_id)
    ]
    proposals = []
    for invoice in invoices:
        try:
            detail = await services.finance.get(f"/proposals/{invoice.invoice_id}")
        except ApiError as exc:
            if exc.status != 404:  # a header not in Finance (yet) is a difference, not an error
                raise
            continue
        proposals.append(proposal_from_json(detail))
    staging = [
        staging_row_from_json(r)
        for r in await services.finance.get("/staging", legal_entity=legal_entity)
    ]
    customer_invoices = [
        customer_invoice_from_json(c) for c in await services.finance.get("/customer-invoices")
    ]
    journal_lines = tuple(await _journal_lines(services, legal_entity))
    records, paused = await _bridge_view(services)
    whole = Snapshot(
        invoices=tuple(invoices),
        proposals=tuple(proposals),
        actuals=tuple(actuals),
        staging_rows=tuple(staging),
        journal_lines=journal_lines,
        customer_invoices=tuple(customer_invoices),
        bridge_records=records,
        paused_maps=paused,
        over_limit_transactions=await _over_limit_transactions(services),
        filtered=await _filtered_view(services),
    )
    mine = scoped(whole, [i.invoice_id for i in invoices], [a.actual_id for a in actuals])
    # Every staged row and journal line of the legal entity is the test's own: one that no
    # actual of its projects accounts for is a difference to show (a ghost row), not to hide.
    return replace(mine, staging_rows=tuple(staging), journal_lines=journal_lines)
