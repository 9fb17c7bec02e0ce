"""`dwsim trace INVOICE_ID`: one invoice's journey across the three services."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from services.simulator.clients import ApiError, Services


async def _maybe(call: Any) -> Any:
    try:
        return await call
    except ApiError as exc:
        return {"error": str(exc)} if exc.status != 404 else None


def resolve_invoice_id(known: list[str], given: str) -> str:
    """The one invoice id among `known` that `given` is, or is a prefix of; LookupError
    naming the candidates when there is none or more than one."""
    wanted = given.strip().lower()
    matches = [i for i in known if i.lower().startswith(wanted)] if wanted else []
    if wanted in (i.lower() for i in known):
        return next(i for i in known if i.lower() == wanted)
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise LookupError(f"no invoice id starts with {given!r}")
    raise LookupError(
        f"{len(matches)} invoice ids start with {given!r}: "
        + ", ".join(sorted(matches)[:5])
        + ("…" if len(matches) > 5 else "")
        + "; give more of the id"
    )


async def collect_trace(services: Services, invoice_id: str) -> dict[str, Any]:
    """What each side holds for the invoice, the bridge's records of it, and its source rows
    the bridge's maps filtered out (counted per map and reason, not stored as records)."""
    return {
        "invoice_id": invoice_id,
        "dataverse": {
            "invoice": await _maybe(services.dataverse.get(f"/invoices/{invoice_id}")),
            "actuals": await _maybe(services.dataverse.get("/actuals", invoice_id=invoice_id)),
        },
        "bridge": {
            "records": await _maybe(services.bridge.get("/records", invoice_id=invoice_id)),
            "filtered": await _maybe(services.bridge.get("/filtered", invoice_id=invoice_id)),
        },
        "finance": {
            "proposal": await _maybe(services.finance.get(f"/proposals/{invoice_id}")),
            "staging": await _maybe(services.finance.get("/staging", invoice_id=invoice_id)),
        },
    }


def filtered_line(count: dict[str, Any]) -> str:
    """E.g. "2 source rows left out by leg 'staging': skip sync (not sent)"."""
    n = count.get("source_rows", 0)
    rows = "source row" if n == 1 else "source rows"
    return f"{n} {rows} left out by leg '{count.get('leg_name')}': {count.get('reason')} (not sent)"


def print_trace(console: Console, journey: dict[str, Any]) -> None:
    """The journey as a table, one step per row, in flow order."""
    table = Table("side", "step", "state", title=f"Invoice {journey['invoice_id']}")
    inv = journey["dataverse"]["invoice"]
    if inv and "error" not in inv:
        table.add_row(
            "Dataverse",
            "proforma invoice",
            f"{inv.get('status')} — total {inv.get('total_amount')} "
            f"{inv.get('currency')}, {inv.get('expected_billed_lines', '?')} billed "
            "lines expected",
        )
    else:
        table.add_row("Dataverse", "proforma invoice", "not found")
    for a in journey["dataverse"]["actuals"] or []:
        if isinstance(a, dict) and a.get("transaction_type") == "billed_sales":
            table.add_row(
                "Dataverse",
                f"billed sales {str(a['actual_id'])[:8]}",
                f"{a.get('quantity')} × {a.get('unit_price')} = {a.get('amount')}; "
                f"voucher {a.get('voucher') or '—'}",
            )
    for r in journey["bridge"]["records"] or []:
        if isinstance(r, dict):
            reason = f" ({r['reason']})" if r.get("reason") else ""
            table.add_row(
                "bridge",
                f"{r.get('map_name')}: {str(r.get('record_key'))[:12]}",
                f"{r.get('status')}{reason}, attempts {r.get('attempts', 1)}",
            )
    for f in journey["bridge"].get("filtered") or []:
        if isinstance(f, dict):
            table.add_row("bridge", f"{f.get('map_name')}: filtered", filtered_line(f))
    for row in journey["finance"]["staging"] or []:
        if isinstance(row, dict):
            table.add_row(
                "Finance",
                f"staging {str(row.get('actual_id'))[:8]}",
                f"{row.get('transaction_type')}, imported "
                f"{row.get('imported')}; {row.get('reason') or ''}",
            )
    proposal = journey["finance"]["proposal"]
    if proposal and "error" not in proposal:
        table.add_row(
            "Finance",
            "invoice proposal",
            f"{proposal.get('status')} — {len(proposal.get('lines') or [])} lines; "
            f"{proposal.get('waiting_reason') or ''}",
        )
    else:
        table.add_row("Finance", "invoice proposal", "not in Finance")
    console.print(table)
