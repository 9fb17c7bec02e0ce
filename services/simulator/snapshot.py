"""Reads what each side holds through its API, normalised for `reconcile`."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from services.simulator.clients import ApiError, Services
from services.simulator.reconcile import (
    BridgeRecord,
    ConfirmedInvoice,
    Proposal,
    Snapshot,
    UnimportedRow,
)


def _dec(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)


async def fetch_snapshot(services: Services) -> Snapshot:
    """Dataverse's confirmed invoices and billed actuals, Finance's proposals and staging, the
    bridge's record statuses."""
    invoices = []
    for inv in await services.dataverse.get("/invoices", status="confirmed"):
        iid = str(inv["invoice_id"])
        billed = await services.dataverse.get(
            "/actuals", invoice_id=iid, transaction_type="billed_sales"
        )
        invoices.append(
            ConfirmedInvoice(
                invoice_id=iid,
                legal_entity=inv["legal_entity"],
                currency=inv["currency"],
                total_amount=_dec(inv["total_amount"]),
                expected_billed_lines=int(inv.get("expected_billed_lines") or len(billed)),
                billed_actual_ids=tuple(str(a["actual_id"]) for a in billed),
                actuals_without_accounting=tuple(
                    str(a["actual_id"]) for a in billed if not a.get("voucher")
                ),
            )
        )
    proposals = []
    for summary in await services.finance.get("/proposals"):
        pid = str(summary.get("proposal_id"))
        detail = await services.finance.get(f"/proposals/{pid}")
        proposals.append(
            Proposal(
                proposal_id=pid,
                currency=detail.get("currency"),
                total_amount=_dec(detail.get("total_amount")),
                status=str(detail.get("status")),
                line_count=len(detail.get("lines") or []),
                waiting_reason=detail.get("waiting_reason"),
            )
        )
    unimported = [
        UnimportedRow(
            actual_id=str(row["actual_id"]),
            invoice_id=str(row["invoice_id"]) if row.get("invoice_id") else None,
            transaction_type=str(row.get("transaction_type")),
            reason=row.get("reason") or row.get("invalid_reason"),
        )
        for row in await services.finance.get("/staging", imported=False)
    ]
    try:
        raw_records = await services.bridge.get("/records", limit=100_000)
        maps = await services.bridge.get("/maps")
    except ApiError:
        raw_records, maps = [], []
    records = [
        BridgeRecord(
            record_key=str(r.get("record_key")),
            invoice_id=str(r["invoice_id"]) if r.get("invoice_id") else None,
            map_name=str(r.get("map_name")),
            status=str(r.get("status")),
            reason=r.get("reason"),
            attempts=int(r.get("attempts") or 1),
        )
        for r in raw_records
    ]
    paused = tuple(m["name"] for m in maps if m.get("state") == "paused")
    return Snapshot(tuple(invoices), tuple(proposals), tuple(records), tuple(unimported), paused)
