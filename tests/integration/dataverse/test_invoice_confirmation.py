"""Confirming a proforma invoice through the API publishes exactly its header and new actuals."""

from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal

import pytest

from schemas.topics import Topic
from tests.integration.dataverse.project_setup import (
    approve_hours,
    contracted_project,
    draft_invoice,
    ok,
)
from tests.integration.dataverse.service_under_test import (
    DataverseUnderTest,
    read_actuals,
    read_topic,
)

pytestmark = pytest.mark.integration


async def test_confirmation_publishes_the_header_and_every_new_actual(
    dataverse: DataverseUnderTest,
) -> None:
    client = dataverse.client
    setup = await contracted_project(client)
    draft = await draft_invoice(client, setup)
    assert draft["status"] == "draft"
    assert draft["total_amount"] == "1600.00"
    detail = draft["lines"][0]["details"][0]
    invoice_id = draft["invoice_id"]

    # Lowered from 8 h to 6 h: 6 h chargeable billed, 2 h non-chargeable billed.
    edited = ok(
        await client.patch(
            f"/invoices/{invoice_id}/details/{detail['detail_id']}", json={"quantity": "6"}
        )
    )
    assert edited["total_amount"] == "1200.00"
    ok(await client.put(f"/invoices/{invoice_id}/tax", json={"tax_amount": "120"}))
    ok(await client.post(f"/invoices/{invoice_id}/review"))
    confirmed = ok(await client.post(f"/invoices/{invoice_id}/confirm"))

    assert confirmed["status"] == "confirmed"
    assert confirmed["expected_billed_lines"] == 2
    assert confirmed["total_amount"] == "1320.00"

    await dataverse.outbox_drained()
    headers = await read_topic(dataverse.settings, dataverse.topic(Topic.INVOICE_CONFIRMED), 1)
    assert len(headers) == 1
    header = headers[0]
    assert header.key == invoice_id
    assert header.value["correlation_id"] == invoice_id
    assert header.payload["invoice_id"] == invoice_id
    assert header.payload["expected_billed_lines"] == 2
    assert Decimal(header.payload["total_amount"]) == Decimal("1320.00")
    assert Decimal(header.payload["tax_amount"]) == Decimal("120.00")
    assert header.payload["currency"] == "USD"
    assert header.payload["legal_entity"] == "USMF"
    assert header.payload["customer_name"] == "Fabrikam"
    assert header.payload["billing_method"] == "time_and_material"

    # Approval: cost + unbilled (keyed by project); confirmation: 7 new actuals (keyed by
    # invoice). Each transaction's actuals of one key travel in one message, in order.
    messages, actuals = await read_actuals(
        dataverse.settings, dataverse.topic(Topic.ACTUALS_CREATED)
    )
    assert Counter((m.key, len(m.payload["actuals"])) for m in messages) == {
        (setup.project_id, 2): 1,
        (invoice_id, 7): 1,
    }
    assert len(actuals) == 9
    by_key = Counter(m.key for m in actuals)
    assert by_key == {setup.project_id: 2, invoice_id: 7}
    of_invoice = [m.payload for m in actuals if m.key == invoice_id]
    assert all(m.value["correlation_id"] == invoice_id for m in actuals if m.key == invoice_id)
    stored = {
        a["actual_id"]: a
        for a in ok(await client.get("/actuals", params={"invoice_id": invoice_id}))
    }
    assert {p["actual_id"] for p in of_invoice} == set(stored)

    shapes = Counter(
        (p["transaction_type"], p["billing_type"], p["quantity"], p["skip_sync"])
        for p in of_invoice
    )
    assert shapes == {
        ("unbilled_sales", "chargeable", "-8", False): 1,  # the original's reversal
        ("unbilled_sales", "chargeable", "6", False): 1,
        ("unbilled_sales", "chargeable", "-6", True): 1,
        ("billed_sales", "chargeable", "6", False): 1,
        ("unbilled_sales", "non_chargeable", "2", False): 1,
        ("unbilled_sales", "non_chargeable", "-2", True): 1,
        ("billed_sales", "non_chargeable", "2", False): 1,
    }
    for billed in (p for p in of_invoice if p["transaction_type"] == "billed_sales"):
        assert billed["billing_method"] == "time_and_material"
        behind = stored[billed["unbilled_actual_id"]]
        assert behind["transaction_type"] == "unbilled_sales"
        assert behind["quantity"] == billed["quantity"]

    # The original is adjusted and, like everything this invoice settled, posted.
    original = ok(await client.get(f"/actuals/{detail['actual_id']}"))
    assert original["adjustment_status"] == "adjusted"
    assert original["billing_status"] == "customer_invoice_posted"


async def test_concurrent_double_confirm_confirms_once_and_publishes_once(
    dataverse: DataverseUnderTest,
) -> None:
    client = dataverse.client
    setup = await contracted_project(client)
    invoice_id = (await draft_invoice(client, setup))["invoice_id"]

    first, second = await asyncio.gather(
        client.post(f"/invoices/{invoice_id}/confirm"),
        client.post(f"/invoices/{invoice_id}/confirm"),
    )

    assert sorted([first.status_code, second.status_code]) == [200, 409]
    refused = first if first.status_code == 409 else second
    assert "confirmed invoice is final" in refused.json()["detail"]
    billed = ok(
        await client.get(
            "/actuals", params={"invoice_id": invoice_id, "transaction_type": "billed_sales"}
        )
    )
    assert len(billed) == 1
    await dataverse.outbox_drained()
    headers = await read_topic(dataverse.settings, dataverse.topic(Topic.INVOICE_CONFIRMED), 1)
    assert [m.key for m in headers] == [invoice_id]
    # Approval 2, confirmation (unchanged quantity) 2: reversal with skip sync + billed sales.
    _, actuals = await read_actuals(dataverse.settings, dataverse.topic(Topic.ACTUALS_CREATED))
    assert len(actuals) == 4


async def test_corrective_invoice_publishes_a_negative_header_and_its_actuals(
    dataverse: DataverseUnderTest,
) -> None:
    client = dataverse.client
    setup = await contracted_project(client)
    invoice_id = (await draft_invoice(client, setup))["invoice_id"]
    ok(await client.post(f"/invoices/{invoice_id}/confirm"))

    corrective = ok(await client.post(f"/invoices/{invoice_id}/correct"), 201)
    assert corrective["is_corrective"] is True
    assert corrective["corrects_invoice_id"] == invoice_id
    assert corrective["total_amount"] == "-1600.00"  # a full credit until the PM edits it
    detail = corrective["lines"][0]["details"][0]
    assert (detail["quantity"], detail["original_quantity"]) == ("0", "8")
    edited = ok(
        await client.patch(
            f"/invoices/{corrective['invoice_id']}/details/{detail['detail_id']}",
            json={"quantity": "6"},
        )
    )
    assert edited["total_amount"] == "-400.00"
    confirmed = ok(await client.post(f"/invoices/{corrective['invoice_id']}/confirm"))
    # Reversal of the original billed sales + the rebilled 6 h.
    assert confirmed["expected_billed_lines"] == 2

    await dataverse.outbox_drained()
    headers = await read_topic(dataverse.settings, dataverse.topic(Topic.INVOICE_CONFIRMED), 2)
    credit = next(m.payload for m in headers if m.key == corrective["invoice_id"])
    assert credit["is_corrective"] is True
    assert credit["corrects_invoice_id"] == invoice_id
    assert Decimal(credit["total_amount"]) == Decimal("-400.00")
    # 2 approval + 2 confirmation + 5 correction (billed reversal, unbilled 6 h + reversal,
    # billed 6 h, 2 h back in the backlog).
    _, actuals = await read_actuals(dataverse.settings, dataverse.topic(Topic.ACTUALS_CREATED))
    assert len(actuals) == 9
    backlog = [
        m
        for m in actuals
        if m.payload["invoice_id"] is None
        and m.payload["billing_status"] == "unbilled_sales_created"
        and m.payload["quantity"] == "2"
    ]
    assert len(backlog) == 1
    assert backlog[0].key == setup.project_id
    assert backlog[0].value["correlation_id"] == corrective["invoice_id"]


async def test_milestone_is_invoiced_through_the_api(dataverse: DataverseUnderTest) -> None:
    client = dataverse.client
    setup = await contracted_project(client)
    milestone = ok(
        await client.post(
            f"/contracts/{setup.contract_id}/milestones",
            json={
                "contract_line_id": setup.fixed_line_id,
                "name": "Go-live",
                "amount": "5000",
                "milestone_date": "2026-03-15",
            },
        ),
        201,
    )
    assert milestone["invoice_status"] == "not_ready"
    ok(await client.post(f"/milestones/{milestone['milestone_id']}/ready"))
    await approve_hours(client, setup)  # not ready: stays out of the invoice
    draft = ok(await client.post(f"/contracts/{setup.contract_id}/invoices", json={}), 201)
    assert draft["total_amount"] == "5000.00"
    confirmed = ok(await client.post(f"/invoices/{draft['invoice_id']}/confirm"))
    assert confirmed["expected_billed_lines"] == 1
    held = ok(await client.get(f"/milestones/{milestone['milestone_id']}"))
    assert held["invoice_status"] == "customer_invoice_created"
