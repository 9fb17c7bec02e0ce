"""`dwsim reconcile` as a page: totals per side, each difference with its cause; and as CSV."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from services.console.access import Session, viewer
from services.console.apis import Services, services_of
from services.console.pages import render
from services.simulator.reconcile import Report, Snapshot, reconcile
from services.simulator.snapshot import fetch_snapshot

VIEWER = Depends(viewer)
SERVICES = Depends(services_of)
CSV_COLUMNS = ("invoice_id", "actual_id", "kind", "cause", "explained")


def side_totals(snapshot: Snapshot) -> list[dict[str, Any]]:
    """Per side and currency: how many invoices and their net amount, as each side holds them."""
    rows: list[dict[str, Any]] = []

    def add(side: str, what: str, items: list[tuple[str, Decimal]]) -> None:
        by_currency: dict[str, list[Decimal]] = defaultdict(list)
        for currency, amount in items:
            by_currency[currency].append(amount)
        for currency in sorted(by_currency) or ["—"]:
            amounts = by_currency.get(currency, [])
            rows.append(
                {
                    "side": side,
                    "what": what,
                    "currency": currency,
                    "count": len(amounts),
                    "net": sum(amounts, Decimal(0)),
                }
            )

    add(
        "Dataverse",
        "confirmed proforma invoices",
        [(i.currency, i.net_amount) for i in snapshot.invoices],
    )
    add(
        "Finance",
        "invoice proposals (chargeable lines)",
        [(p.currency, p.net_amount) for p in snapshot.proposals],
    )
    add(
        "Finance",
        "posted customer invoices",
        [(c.currency, c.net_amount) for c in snapshot.customer_invoices],
    )
    return rows


def report_csv(report: Report) -> str:
    """The differences as CSV, one per row, with a header."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for difference in report.differences:
        writer.writerow(difference.to_json())
    return out.getvalue()


def router() -> APIRouter:
    """The reconciliation page and its CSV."""
    routes = APIRouter()

    @routes.get("/reconciliation")
    async def page(
        request: Request, session: Session = VIEWER, services: Services = SERVICES
    ) -> Response:
        snapshot = await fetch_snapshot(services)
        report = reconcile(snapshot)
        return render(
            request,
            "reconciliation.html",
            session,
            report=report,
            totals=side_totals(snapshot),
        )

    @routes.get("/reconciliation.csv")
    async def as_csv(_: Session = VIEWER, services: Services = SERVICES) -> Response:
        report = reconcile(await fetch_snapshot(services))
        return Response(
            report_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="reconciliation.csv"'},
        )

    return routes
