"""Building blocks of the tests, through the API: a customer with contracted, approved work.

Microsoft's time-and-material example: 8 h at cost rate 100 and bill rate 200.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The JSON body of a response that must have this status."""
    assert response.status_code == status, (response.status_code, response.text)
    return response.json()


@dataclass(frozen=True)
class ContractedProject:
    """A customer, a project, and a contract with a T&M line and a fixed-price line."""

    customer_id: str
    project_id: str
    contract_id: str
    tm_line_id: str
    fixed_line_id: str


async def contracted_project(client: httpx.AsyncClient) -> ContractedProject:
    """Create customer, project and contract (USMF, USD)."""
    customer = ok(
        await client.post("/accounts", json={"name": "Fabrikam", "legal_entity": "USMF"}), 201
    )
    project = ok(
        await client.post(
            "/projects",
            json={"name": "Rollout", "legal_entity": "USMF", "customer_id": customer["account_id"]},
        ),
        201,
    )
    contract = ok(
        await client.post(
            "/contracts",
            json={
                "name": "Rollout contract",
                "legal_entity": "USMF",
                "customer_id": customer["account_id"],
                "currency": "USD",
                "lines": [
                    {
                        "name": "Consulting",
                        "project_id": project["project_id"],
                        "billing_method": "time_and_material",
                        "bill_rate": "200",
                        "cost_rate": 100,
                        "bill_rates": {"Architect": "250"},
                    },
                    {
                        "name": "Go-live",
                        "project_id": project["project_id"],
                        "billing_method": "fixed_price",
                        "bill_rate": "0",
                        "cost_rate": "0",
                    },
                ],
            },
        ),
        201,
    )
    return ContractedProject(
        customer_id=customer["account_id"],
        project_id=project["project_id"],
        contract_id=contract["contract_id"],
        tm_line_id=contract["lines"][0]["contract_line_id"],
        fixed_line_id=contract["lines"][1]["contract_line_id"],
    )


async def approve_hours(
    client: httpx.AsyncClient, setup: ContractedProject, hours: str = "8", **extra: Any
) -> dict[str, Any]:
    """Approve a time entry on the T&M line; returns {entry_id, actuals}."""
    body = {
        "transaction_class": "time",
        "project_id": setup.project_id,
        "contract_line_id": setup.tm_line_id,
        "quantity": hours,
        "document_date": "2026-03-02",
        "resource": "Alice",
        **extra,
    }
    entry: dict[str, Any] = ok(await client.post("/entries/approve", json=body), 201)
    return entry


def unbilled_of(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The entry's unbilled-sales actuals."""
    return [a for a in entry["actuals"] if a["transaction_type"] == "unbilled_sales"]


async def draft_invoice(
    client: httpx.AsyncClient, setup: ContractedProject, hours: str = "8"
) -> dict[str, Any]:
    """Approve hours, mark their unbilled sales ready, and create a draft invoice."""
    entry = await approve_hours(client, setup, hours)
    ids = [a["actual_id"] for a in unbilled_of(entry) if a["billing_type"] == "chargeable"]
    ok(await client.post("/actuals/ready", json={"actual_ids": ids}))
    invoice: dict[str, Any] = ok(
        await client.post(
            f"/contracts/{setup.contract_id}/invoices", json={"invoice_date": "2026-03-31"}
        ),
        201,
    )
    return invoice
