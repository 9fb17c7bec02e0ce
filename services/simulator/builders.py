"""The common set-ups, each through the services' APIs as a user would make it: a legal entity
with its rates and periods, a customer, a time-and-material or fixed-price contract, approved
entries, a confirmed invoice.

`seed.py` plans what to create (pure); these functions create one thing each. The demo, the
scenarios and the pytest plugin all build through them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from services.simulator.clients import Services
from services.simulator.seed import ContractPlan, EntryPlan

# The line the builders give every contract; an entry's own rates price its actuals.
CONTRACT_LINE_BILL_RATE = Decimal(200)
CONTRACT_LINE_COST_RATE = Decimal(100)


@dataclass(frozen=True)
class Contract:
    """A project contract as created: one contract line on one project."""

    contract_id: str
    project_id: str
    contract_line_id: str
    legal_entity: str
    currency: str
    customer_id: str
    billing_method: str


async def set_up_legal_entity(
    services: Services,
    legal_entity: str,
    accounting_currency: str,
    fiscal_years: Iterable[int],
    rates: Mapping[str, Decimal] | None = None,
    rates_valid_from: date | None = None,
    line_properties: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Finance: the legal entity with its accounting currency, twelve open periods per fiscal
    year, and an exchange rate from each currency of `rates` to its accounting currency.

    Returns the legal entity's setup as Finance shows it.
    """
    years = sorted(set(fiscal_years))
    setup: dict[str, Any] = {}
    for n, year in enumerate(years):
        body: dict[str, Any] = {"accounting_currency": accounting_currency, "fiscal_year": year}
        if line_properties is not None and n == 0:
            body["line_properties"] = dict(line_properties)
        setup = await services.finance.call("PUT", f"/legal-entities/{legal_entity}", body)
    valid_from = rates_valid_from or date(years[0], 1, 1)
    for currency, rate in sorted((rates or {}).items()):
        setup = await services.finance.post(
            f"/legal-entities/{legal_entity}/exchange-rates",
            {
                "from_currency": currency,
                "to_currency": accounting_currency,
                "valid_from": str(valid_from),
                "rate": str(rate),
            },
        )
    return setup


async def create_customer(services: Services, name: str, legal_entity: str) -> str:
    """Dataverse: a customer (account) of a legal entity; returns its id."""
    account = await services.dataverse.post(
        "/accounts", {"name": name, "legal_entity": legal_entity}
    )
    return str(account["account_id"])


async def create_contract(
    services: Services, plan: ContractPlan, customer_id: str, milestone_date: date
) -> Contract:
    """Dataverse: a project and its contract with one line (time and material or fixed price);
    each planned milestone is added and marked ready to invoice."""
    project = await services.dataverse.post(
        "/projects",
        {
            "name": f"Project {plan.name}",
            "legal_entity": plan.legal_entity,
            "customer_id": customer_id,
        },
    )
    created = await services.dataverse.post(
        "/contracts",
        {
            "name": plan.name,
            "legal_entity": plan.legal_entity,
            "customer_id": customer_id,
            "currency": plan.currency,
            "lines": [
                {
                    "name": "Services",
                    "project_id": project["project_id"],
                    "billing_method": plan.billing_method,
                    "bill_rate": str(CONTRACT_LINE_BILL_RATE),
                    "cost_rate": str(CONTRACT_LINE_COST_RATE),
                }
            ],
        },
    )
    contract = Contract(
        contract_id=str(created["contract_id"]),
        project_id=str(project["project_id"]),
        contract_line_id=str(created["lines"][0]["contract_line_id"]),
        legal_entity=plan.legal_entity,
        currency=plan.currency,
        customer_id=customer_id,
        billing_method=plan.billing_method,
    )
    for n, amount in enumerate(plan.milestones):
        await add_milestone(services, contract, amount, milestone_date, f"Milestone {n + 1}")
    return contract


async def add_milestone(
    services: Services, contract: Contract, amount: Decimal, milestone_date: date, name: str
) -> str:
    """Dataverse: a milestone on a fixed-price contract, marked ready to invoice."""
    milestone = await services.dataverse.post(
        f"/contracts/{contract.contract_id}/milestones",
        {
            "contract_line_id": contract.contract_line_id,
            "name": name,
            "amount": str(amount),
            "milestone_date": str(milestone_date),
        },
    )
    await services.dataverse.post(f"/milestones/{milestone['milestone_id']}/ready")
    return str(milestone["milestone_id"])


async def approve_entry(
    services: Services, contract: Contract, entry: EntryPlan, mark_ready: bool = True
) -> list[dict[str, Any]]:
    """Dataverse: approve a time or expense entry on the contract's line (it makes cost and
    unbilled-sales actuals) and, unless not `mark_ready`, mark its chargeable unbilled sales
    ready to invoice. Returns the actuals the approval made."""
    approved = await services.dataverse.post(
        "/entries/approve",
        {
            "transaction_class": entry.transaction_class,
            "project_id": contract.project_id,
            "contract_line_id": contract.contract_line_id,
            "quantity": str(entry.quantity),
            "billable_quantity": str(entry.billable_quantity),
            "cost_rate": str(entry.cost_rate),
            "bill_rate": str(entry.bill_rate),
            "document_date": str(entry.document_date),
            "resource": entry.resource,
            "role": entry.role,
        },
    )
    actuals: list[dict[str, Any]] = approved["actuals"]
    ready = [
        a["actual_id"]
        for a in actuals
        if a["transaction_type"] == "unbilled_sales" and a["billing_type"] == "chargeable"
    ]
    if mark_ready and ready:
        await services.dataverse.post("/actuals/ready", {"actual_ids": ready})
    return actuals


async def confirm_invoice(
    services: Services,
    contract_id: str,
    invoice_date: date,
    quantity_edits: Mapping[int, Decimal] | None = None,
) -> str:
    """Dataverse: a proforma invoice of everything ready on the contract, each planned edit of
    a detail's quantity applied while it is a draft, then confirmed; returns its id."""
    invoice = await services.dataverse.post(
        f"/contracts/{contract_id}/invoices", {"invoice_date": str(invoice_date)}
    )
    invoice_id = str(invoice["invoice_id"])
    details = [d for line in invoice["lines"] for d in line["details"]]
    for index, quantity in (quantity_edits or {}).items():
        if index < len(details):
            await services.dataverse.call(
                "PATCH",
                f"/invoices/{invoice_id}/details/{details[index]['detail_id']}",
                {"quantity": str(quantity)},
            )
    await services.dataverse.post(f"/invoices/{invoice_id}/confirm")
    return invoice_id
