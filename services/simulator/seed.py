"""Deterministic demo data: the same seed gives the same entities, contracts, entries and edits.

Pure: produces request bodies for the services' APIs; `demo.py` sends them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

# Legal entities with their accounting currency, and the contract currencies sold in each.
LEGAL_ENTITIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "USPM": ("USD", ("USD", "EUR")),
    "DEMF": ("EUR", ("EUR",)),
    "GBSI": ("GBP", ("GBP", "USD")),
}
# Rates from a contract currency to an entity's accounting currency, valid from the year's start.
EXCHANGE_RATES: dict[tuple[str, str], Decimal] = {
    ("EUR", "USD"): Decimal("1.0850"),
    ("USD", "GBP"): Decimal("0.7900"),
}
ROLES: dict[str, tuple[Decimal, Decimal]] = {
    # role: (cost rate, bill rate)
    "Developer": (Decimal("100"), Decimal("200")),
    "Consultant": (Decimal("120"), Decimal("250")),
    "Project manager": (Decimal("140"), Decimal("300")),
}
RESOURCES = ("Ana Silva", "Ben Okafor", "Chen Wei", "Dana Kovacs", "Eli Novak", "Fay Moreau")
CUSTOMERS = ("Contoso", "Fabrikam", "Litware", "Northwind", "Adatum", "Tailspin")


@dataclass(frozen=True)
class EntryPlan:
    """One time or expense entry to approve."""

    transaction_class: str
    quantity: Decimal
    billable_quantity: Decimal
    cost_rate: Decimal
    bill_rate: Decimal
    resource: str
    role: str
    document_date: date


@dataclass(frozen=True)
class ContractPlan:
    """A contract that ends in exactly one proforma invoice."""

    index: int
    legal_entity: str
    currency: str
    customer: str
    billing_method: str
    entries: tuple[EntryPlan, ...] = ()
    milestones: tuple[Decimal, ...] = ()
    # Edits of the draft before confirming: detail index -> new quantity.
    quantity_edits: dict[int, Decimal] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Readable contract name."""
        kind = "T&M" if self.billing_method == "time_and_material" else "Fixed price"
        return f"{self.customer} {kind} #{self.index:03d}"


@dataclass(frozen=True)
class DemoPlan:
    """Everything the demo creates."""

    seed: int
    business_date: date
    contracts: tuple[ContractPlan, ...]

    @property
    def legal_entities(self) -> list[str]:
        """Legal entities in use."""
        return sorted({c.legal_entity for c in self.contracts})


def plan_demo(seed: int, invoices: int, business_date: date) -> DemoPlan:
    """Plan `invoices` contracts: a quarter fixed price with milestones, the rest T&M.

    T&M entries include reduced billable hours (approver cut 8 → 6) and increased ones (8 → 10),
    and some drafts get a detail quantity lowered or raised before confirmation — the cases of
    domain.md's confirmation table.
    """
    rng = random.Random(seed)
    entities = sorted(LEGAL_ENTITIES)
    contracts = []
    for i in range(invoices):
        entity = entities[i % len(entities)]
        currency = rng.choice(LEGAL_ENTITIES[entity][1])
        customer = CUSTOMERS[rng.randrange(len(CUSTOMERS))]
        doc_day = business_date.replace(day=1)
        if i % 4 == 3:
            amounts = tuple(Decimal(rng.randrange(20, 80) * 250) for _ in range(rng.randint(1, 2)))
            contracts.append(
                ContractPlan(i, entity, currency, customer, "fixed_price", milestones=amounts)
            )
            continue
        entries = []
        for e in range(rng.randint(2, 4)):
            role = rng.choice(sorted(ROLES))
            cost, bill = ROLES[role]
            hours = Decimal(rng.choice((4, 6, 8)))
            billable = hours
            if e == 0 and i % 3 == 1:
                billable = hours - 2  # approver cuts billable hours
            elif e == 0 and i % 3 == 2:
                billable = hours + 2  # approver raises billable hours
            entries.append(
                EntryPlan(
                    "time",
                    hours,
                    billable,
                    cost,
                    bill,
                    rng.choice(RESOURCES),
                    role,
                    doc_day.replace(day=1 + e),
                )
            )
        if rng.random() < 0.5:
            amount = Decimal(rng.randrange(50, 400))
            entries.append(
                EntryPlan(
                    "expense",
                    Decimal(1),
                    Decimal(1),
                    amount,
                    amount,
                    rng.choice(RESOURCES),
                    "Consultant",
                    doc_day.replace(day=5),
                )
            )
        edits: dict[int, Decimal] = {}
        if i % 5 == 1:
            edits[0] = Decimal(2)  # lowered on the draft
        elif i % 5 == 2:
            edits[0] = entries[0].billable_quantity + 1  # raised on the draft
        contracts.append(
            ContractPlan(
                i,
                entity,
                currency,
                customer,
                "time_and_material",
                entries=tuple(entries),
                quantity_edits=edits,
            )
        )
    return DemoPlan(seed, business_date, tuple(contracts))
