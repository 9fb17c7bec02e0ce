"""One invoice across the three sides, and the search that finds it.

Dataverse's proforma with its lines and actuals, the bridge's records, Finance's proposal with
its lines, staging rows, customer invoice and voucher. The differences are those of
`dwsim reconcile` (services/simulator/reconcile.py) for this invoice, with their causes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from services.console.access import Session, viewer
from services.console.apis import ApiError, Services, services_of
from services.console.pages import render
from services.simulator.reconcile import Difference, reconcile
from services.simulator.snapshot import fetch_snapshot

VIEWER = Depends(viewer)
SERVICES = Depends(services_of)
SEARCH_LIMIT = 200


@dataclass
class InvoiceSides:
    """What each side holds for one invoice, and reconcile's differences for it."""

    invoice: dict[str, Any]
    customer: str
    actuals: list[dict[str, Any]]
    records: list[dict[str, Any]]
    proposal: dict[str, Any] | None
    staging: list[dict[str, Any]]
    customer_invoice: dict[str, Any] | None
    voucher: dict[str, Any] | None
    differences: list[Difference] = field(default_factory=list)
    # Source rows the bridge's maps filtered out (skip sync): counted, not stored as records.
    filtered: list[dict[str, Any]] = field(default_factory=list)

    @property
    def differing_actuals(self) -> dict[str, str]:
        """Actual id → the cause of its difference, to highlight its rows."""
        return {d.actual_id: d.cause for d in self.differences if d.actual_id}


async def _or_none(call: Any) -> Any:
    try:
        return await call
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


async def invoice_sides(services: Services, invoice_id: UUID) -> InvoiceSides:
    """Read the invoice from each side; ApiError 404 when Dataverse has no such invoice."""
    key = str(invoice_id)
    invoice = await services.dataverse.get(f"/invoices/{key}")
    account, actuals, records, filtered, proposal, staging = await asyncio.gather(
        _or_none(services.dataverse.get(f"/accounts/{invoice['customer_id']}")),
        services.dataverse.get("/actuals", invoice_id=key),
        services.bridge.get("/records", invoice_id=key),
        services.bridge.get("/filtered", invoice_id=key),
        _or_none(services.finance.get(f"/proposals/{key}")),
        services.finance.get("/staging", invoice_id=key),
    )
    customer_invoice = voucher = None
    if proposal and proposal.get("invoice_number"):
        customer_invoice = await _or_none(
            services.finance.get(f"/customer-invoices/{proposal['invoice_number']}")
        )
    voucher_id = (customer_invoice or {}).get("voucher") or (proposal or {}).get("voucher")
    if voucher_id:
        voucher = await _or_none(services.finance.get(f"/vouchers/{voucher_id}"))
    # The whole comparison, as `dwsim reconcile` makes it, then this invoice's part of it:
    # a cause may rest on records of other invoices (an orphan, a paused map).
    report = reconcile(await fetch_snapshot(services))
    return InvoiceSides(
        invoice=invoice,
        customer=account["name"] if account else str(invoice["customer_id"]),
        actuals=sorted(actuals, key=lambda a: (a["transaction_type"], a["actual_id"])),
        records=records,
        proposal=proposal,
        staging=staging,
        customer_invoice=customer_invoice,
        voucher=voucher,
        differences=[d for d in report.differences if d.invoice_id == key],
        filtered=filtered,
    )


async def search_invoices(services: Services, query: str) -> list[dict[str, Any]]:
    """Invoices whose id or number starts with `query`, or whose customer's name contains it
    (case does not matter); every invoice, newest first, when `query` is empty."""
    invoices, accounts = await asyncio.gather(
        services.dataverse.get("/invoices"), services.dataverse.get("/accounts")
    )
    names = {a["account_id"]: a["name"] for a in accounts}
    wanted = query.strip().lower()
    found = [
        {**inv, "customer": names.get(inv["customer_id"], inv["customer_id"])}
        for inv in invoices
        if not wanted
        or str(inv["invoice_id"]).lower().startswith(wanted)
        or str(inv["invoice_number"]).lower().startswith(wanted)
        or wanted in names.get(inv["customer_id"], "").lower()
    ]
    found.sort(key=lambda inv: str(inv["created_at"]), reverse=True)
    return found[:SEARCH_LIMIT]


def router() -> APIRouter:
    """The invoice search and the invoice page."""
    routes = APIRouter()

    @routes.get("/invoices")
    async def search(
        request: Request, q: str = "", session: Session = VIEWER, services: Services = SERVICES
    ) -> Response:
        found = await search_invoices(services, q)
        if q.strip() and len(found) == 1:
            return RedirectResponse(f"/invoices/{found[0]['invoice_id']}", status_code=303)
        return render(request, "invoices.html", session, query=q, invoices=found)

    @routes.get("/invoices/{invoice_id}")
    async def invoice(
        request: Request,
        invoice_id: UUID,
        session: Session = VIEWER,
        services: Services = SERVICES,
    ) -> Response:
        sides = await invoice_sides(services, invoice_id)
        return render(request, "invoice.html", session, sides=sides)

    return routes
