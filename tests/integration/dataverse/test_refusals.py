"""Refused requests (409 rule, 422 body, 401/403 token, 404 id) write nothing at all."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from uuid import uuid4

import httpx
import pytest

from tests.integration.dataverse.project_setup import (
    approve_hours,
    contracted_project,
    draft_invoice,
    ok,
    unbilled_of,
)
from tests.integration.dataverse.service_under_test import DataverseUnderTest, bearer

pytestmark = pytest.mark.integration

# Every table of the service, and the outbox without the relay's bookkeeping.
_SNAPSHOT = [
    "SELECT * FROM account ORDER BY account_id",
    "SELECT * FROM project ORDER BY project_id",
    "SELECT * FROM project_contract ORDER BY contract_id",
    "SELECT * FROM contract_line ORDER BY contract_line_id",
    "SELECT * FROM milestone ORDER BY milestone_id",
    "SELECT * FROM project_entry ORDER BY entry_id",
    "SELECT * FROM msdyn_actual ORDER BY actual_id",
    "SELECT * FROM proforma_invoice ORDER BY invoice_id",
    "SELECT * FROM invoice_line ORDER BY line_id",
    "SELECT * FROM invoice_line_detail ORDER BY detail_id",
    "SELECT * FROM accounting_update_refused ORDER BY id",
    "SELECT id, event_id, topic, key, value FROM dwsim_outbox ORDER BY id",
]


async def snapshot(dataverse: DataverseUnderTest) -> list[list[dict[str, Any]]]:
    """Everything the service holds."""
    return [await dataverse.table(sql) for sql in _SNAPSHOT]


async def refused_without_writing(
    dataverse: DataverseUnderTest,
    request: Callable[[], Awaitable[httpx.Response]],
    status: int,
    says: str,
) -> dict[str, Any]:
    """Send the request; it must get `status` with `says` in its detail, and change nothing."""
    before = await snapshot(dataverse)
    response = await request()
    assert response.status_code == status, response.text
    assert says in str(response.json()["detail"]), response.text
    assert await snapshot(dataverse) == before
    body: dict[str, Any] = response.json()
    return body


async def test_illegal_transitions_are_409_with_the_rule_and_write_nothing(
    dataverse: DataverseUnderTest,
) -> None:
    client = dataverse.client
    setup = await contracted_project(client)
    draft = await draft_invoice(client, setup)
    invoice_id = draft["invoice_id"]
    detail = draft["lines"][0]["details"][0]
    ok(await client.post(f"/invoices/{invoice_id}/confirm"))
    details_url = f"/invoices/{invoice_id}/details/{detail['detail_id']}"

    conflict = await refused_without_writing(
        dataverse,
        lambda: client.post(f"/invoices/{invoice_id}/confirm"),
        409,
        "confirmed invoice is final",
    )
    assert conflict["rule"] == "InvoiceConfirmedError"
    await refused_without_writing(
        dataverse, lambda: client.patch(details_url, json={"quantity": 4}), 409, "final"
    )
    await refused_without_writing(dataverse, lambda: client.delete(details_url), 409, "final")
    await refused_without_writing(
        dataverse, lambda: client.delete(f"/invoices/{invoice_id}"), 409, "final"
    )
    await refused_without_writing(
        dataverse,
        lambda: client.put(f"/invoices/{invoice_id}/tax", json={"tax_amount": "5"}),
        409,
        "final",
    )
    # The invoiced actual cannot go back to the backlog; nor can a cancelled approval's.
    await refused_without_writing(
        dataverse,
        lambda: client.post("/actuals/ready", json={"actual_ids": [detail["actual_id"]]}),
        409,
        "already on an invoice",
    )
    entry = await approve_hours(client, setup, "4")
    ok(await client.post(f"/entries/{entry['entry_id']}/cancel"))
    adjusted = unbilled_of(entry)[0]["actual_id"]
    await refused_without_writing(
        dataverse,
        lambda: client.post("/actuals/ready", json={"actual_ids": [adjusted]}),
        409,
        "adjusted or unadjustable actuals can never be invoiced",
    )
    await refused_without_writing(
        dataverse,
        lambda: client.post(f"/entries/{entry['entry_id']}/cancel"),
        409,
        "no actuals left to cancel",
    )
    await refused_without_writing(
        dataverse,
        lambda: client.post(f"/contracts/{setup.contract_id}/invoices", json={}),
        409,
        "nothing is ready to invoice",
    )


async def test_invalid_bodies_are_422_naming_the_field_and_write_nothing(
    dataverse: DataverseUnderTest,
) -> None:
    client = dataverse.client
    setup = await contracted_project(client)
    entry = {
        "transaction_class": "time",
        "project_id": setup.project_id,
        "contract_line_id": setup.tm_line_id,
        "quantity": "eight",
        "document_date": "2026-03-02",
    }
    body = await refused_without_writing(
        dataverse, lambda: client.post("/entries/approve", json=entry), 422, "quantity"
    )
    assert body["detail"][0]["loc"] == ["body", "quantity"]
    await refused_without_writing(
        dataverse,
        lambda: client.post("/entries/approve", json={**entry, "quantity": "-1"}),
        422,
        "quantity",
    )
    await refused_without_writing(
        dataverse,
        lambda: client.post(
            "/entries/approve", json={**entry, "quantity": 8, "transaction_class": "milestone"}
        ),
        422,
        "transaction_class",
    )
    # Longer than a Dataverse name: 500 such actuals would not fit one message.
    body = await refused_without_writing(
        dataverse,
        lambda: client.post("/entries/approve", json={**entry, "quantity": 8, "role": "r" * 201}),
        422,
        "role",
    )
    assert body["detail"][0]["loc"] == ["body", "role"]
    await refused_without_writing(
        dataverse,
        lambda: client.post(
            "/contracts",
            json={
                "name": "x",
                "legal_entity": "USMF",
                "customer_id": setup.customer_id,
                "currency": "DOLLARS",
                "lines": [],
            },
        ),
        422,
        "currency",
    )
    draft = await draft_invoice(client, setup)
    await refused_without_writing(
        dataverse,
        lambda: client.patch(
            f"/invoices/{draft['invoice_id']}/details/{draft['lines'][0]['details'][0]['detail_id']}",
            json={"billing_type": "free"},
        ),
        422,
        "billing_type",
    )


async def test_missing_or_wrong_tokens_are_401_or_403_and_write_nothing(
    dataverse: DataverseUnderTest,
) -> None:
    client = dataverse.client
    setup = await contracted_project(client)
    draft = await draft_invoice(client, setup)
    confirm = f"/invoices/{draft['invoice_id']}/confirm"
    settings = dataverse.settings

    await refused_without_writing(
        dataverse, lambda: client.post(confirm, headers={"Authorization": ""}), 401, "missing"
    )
    await refused_without_writing(
        dataverse, lambda: client.post(confirm, headers=bearer("not-a-token")), 401, "unknown"
    )
    await refused_without_writing(
        dataverse,
        lambda: client.post(confirm, headers=bearer(settings.token_receivables_clerk)),
        403,
        "project_manager",
    )
    # Reads take any role's token, but some token.
    assert (
        await client.get("/invoices", headers=bearer(settings.token_accountant))
    ).status_code == 200
    assert (await client.get("/invoices", headers={"Authorization": ""})).status_code == 401


async def test_unknown_ids_are_404_and_write_nothing(dataverse: DataverseUnderTest) -> None:
    client = dataverse.client
    setup = await contracted_project(client)
    draft = await draft_invoice(client, setup)
    unknown = str(uuid4())
    await refused_without_writing(
        dataverse, lambda: client.post(f"/invoices/{unknown}/confirm"), 404, unknown
    )
    await refused_without_writing(
        dataverse,
        lambda: client.patch(
            f"/invoices/{draft['invoice_id']}/details/{unknown}", json={"quantity": 1}
        ),
        404,
        unknown,
    )
    await refused_without_writing(
        dataverse,
        lambda: client.post(
            "/actuals/ready",
            json={"actual_ids": [draft["lines"][0]["details"][0]["actual_id"], unknown]},
        ),
        404,
        unknown,
    )
    await refused_without_writing(
        dataverse, lambda: client.get(f"/actuals/{unknown}"), 404, unknown
    )
