"""Rules domain.md leaves open, decided and written in docs/dataverse.md ("Rules decided"),
each proven here through the API."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.integration.dataverse.project_setup import (
    approve_hours,
    contracted_project,
    draft_invoice,
    ok,
)
from tests.integration.dataverse.service_under_test import DataverseUnderTest

pytestmark = pytest.mark.integration


def _by_type(entry: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return sorted(
        (a["transaction_type"], a["billing_type"], a["quantity"], a["amount"])
        for a in entry["actuals"]
    )


async def test_rule_decided_an_approver_may_raise_billable_hours_above_the_hours_worked(
    dataverse: DataverseUnderTest,
) -> None:
    """Accepted: 8 h worked, 10 billable → cost 8 h / 800, unbilled sales 10 h / 2,000
    chargeable. Cost stays at the hours worked; the customer is billed what the approver let."""
    setup = await contracted_project(dataverse.client)
    entry = await approve_hours(dataverse.client, setup, "8", billable_quantity="10")
    assert _by_type(entry) == [
        ("cost", "chargeable", "8", "800.00"),
        ("unbilled_sales", "chargeable", "10", "2000.00"),
    ]


async def test_rule_decided_a_second_corrective_draft_is_refused_while_one_is_open(
    dataverse: DataverseUnderTest,
) -> None:
    """Refused at creation (409), not only at confirmation: both drafts would credit the same
    billed sales. Deleting (or confirming) the open draft lets the invoice be corrected again."""
    client = dataverse.client
    setup = await contracted_project(client)
    invoice_id = (await draft_invoice(client, setup))["invoice_id"]
    ok(await client.post(f"/invoices/{invoice_id}/confirm"))
    first = ok(await client.post(f"/invoices/{invoice_id}/correct"), 201)
    ok(await client.post(f"/invoices/{first['invoice_id']}/review"))

    async def invoices() -> int:
        async with dataverse.pool.acquire() as conn:
            count: int = await conn.fetchval("SELECT count(*) FROM proforma_invoice")
            return count

    before = await invoices()
    second = await client.post(f"/invoices/{invoice_id}/correct")
    assert second.status_code == 409, second.text
    assert second.json()["detail"] == (
        f"invoice {invoice_id} already has corrective draft {first['invoice_id']} "
        "not confirmed yet: correct it there, or confirm or delete it first"
    )
    assert await invoices() == before, "nothing is written"

    # Two corrections racing: the corrected invoice's lock lets exactly one through.
    assert (await client.delete(f"/invoices/{first['invoice_id']}")).status_code == 204
    racing = await asyncio.gather(
        client.post(f"/invoices/{invoice_id}/correct"),
        client.post(f"/invoices/{invoice_id}/correct"),
    )
    assert sorted(r.status_code for r in racing) == [201, 409], [r.text for r in racing]
