"""Reads what each side holds through its API, normalised for `reconcile`."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from services.simulator.clients import ApiError, Services
from services.simulator.reconcile import (
    Actual,
    BridgeRecord,
    ConfirmedInvoice,
    CustomerInvoice,
    JournalLine,
    Proposal,
    ProposalLine,
    Snapshot,
    StagingRow,
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


async def fetch_snapshot(services: Services) -> Snapshot:
    """Dataverse's confirmed invoices and actuals; Finance's proposals with their lines, staged
    rows, journal lines and customer invoices; the bridge's record statuses.

    The sides are read one after the other, not at one instant: on a settled stack that makes
    no difference; under load, a record created between the reads can show as a difference.
    """
    invoices = tuple(
        ConfirmedInvoice(
            invoice_id=str(inv["invoice_id"]),
            legal_entity=str(inv["legal_entity"]),
            currency=str(inv["currency"]),
            net_amount=_dec(inv["total_amount_excluding_tax"]),
            tax_amount=_dec(inv["tax_amount"]),
            expected_billed_lines=int(inv.get("expected_billed_lines") or 0),
        )
        for inv in await services.dataverse.get("/invoices", status="confirmed")
    )
    actuals = tuple(actual_from_json(a) for a in await services.dataverse.get("/actuals"))
    proposals = []
    for summary in await services.finance.get("/proposals"):
        detail = await services.finance.get(f"/proposals/{summary['proposal_id']}")
        proposals.append(proposal_from_json(detail))
    staging = tuple(staging_row_from_json(r) for r in await services.finance.get("/staging"))
    journal_lines = []
    for journal in await services.finance.get("/journals"):
        detail = await services.finance.get(f"/journals/{journal['journal_id']}")
        journal_lines += [
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
    customer_invoices = tuple(
        CustomerInvoice(
            invoice_number=str(c["invoice_number"]),
            proposal_id=str(c["proposal_id"]),
            currency=str(c["currency"]),
            net_amount=_dec(c["net_amount"]),
            tax_amount=_dec(c["tax_amount"]),
            total_amount=_dec(c["total_amount"]),
            voucher=str(c["voucher"]),
        )
        for c in await services.finance.get("/customer-invoices")
    )
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
    paused = tuple(m["name"] for m in maps if m.get("state") == "paused")
    return Snapshot(
        invoices=invoices,
        proposals=tuple(proposals),
        actuals=actuals,
        staging_rows=staging,
        journal_lines=tuple(journal_lines),
        customer_invoices=customer_invoices,
        bridge_records=records,
        paused_maps=paused,
    )
