"""Application layer of Finance: one command, one transaction.

Each command locks what its rule reads or changes (`FOR SHARE` / `FOR UPDATE`), asks the pure
rules in `domain.py` what the change is, writes it through `repository` and queues the events it
causes in the outbox, all in one transaction: a rule that refuses (`FinanceRuleError`, HTTP 409)
or a missing record (`NotFound`, 404) rolls everything back, so nothing is written and nothing
is published.

Here: the legal entity setup (the entity with its line properties and fiscal year, exchange
rates, fiscal periods), contracts' fixed exchange rates, and header edits of a proposal made in
Finance. The two other use-case modules follow the same shape, each for a unit of work of its
own: `importer.py` (import from staging, periodic or on demand) and `posting.py` (posting
integration journals and proposals). `api.py` only parses a request, calls one of them (or a
read of `repository`) and shapes the answer with `views.py`.

Lock order: legal entity, then the contract's fixed rate, then the proposal. Postings and
imports only read fixed rates (one statement each), so a rate changed while they run applies to
the next one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from schemas.envelope import Envelope
from schemas.finance_events import ProposalHeaderChanged
from schemas.topics import Topic, topic_name
from services.common import outbox
from services.common.db import DbConnection
from services.common.errors import NotFound
from services.common.logging import get_logger
from services.common.settings import Settings
from services.finance import repository
from services.finance.domain import (
    EDITABLE_HEADER_FIELDS,
    ONE_WAY_MESSAGE,
    ContractFixedRate,
    LegalEntitySetup,
    ProposalStatus,
    fix_contract_rate,
)
from services.finance.domain import edit_proposal_header as header_edit

SOURCE = "finance"
PROPOSAL_HEADER_CHANGED = "proposal.header_changed"

log = get_logger(__name__)


# --- legal entity setup ---------------------------------------------------------------------------


async def legal_entity_setup(conn: DbConnection, legal_entity_id: str) -> LegalEntitySetup:
    """A legal entity's setup; `NotFound` when Finance has none."""
    setups = await repository.load_setups(conn, [legal_entity_id])
    if legal_entity_id not in setups:
        raise NotFound(f"no legal entity {legal_entity_id}")
    return setups[legal_entity_id]


async def set_up_legal_entity(
    conn: DbConnection,
    legal_entity_id: str,
    *,
    accounting_currency: str,
    line_properties: Mapping[str, str] | None,
    move_to_next_open_period: bool | None,
    fiscal_year: int | None,
) -> LegalEntitySetup:
    """Create or update a legal entity's setup (project accountant); returns it as stored.

    `line_properties` given replaces the whole billing type → line property mapping (domain
    rule 6); a new legal entity without one gets the typical mapping. `fiscal_year` adds its
    twelve open monthly periods. Absent fields keep their value.
    """
    async with conn.transaction():
        created = await repository.upsert_legal_entity(
            conn,
            legal_entity_id,
            accounting_currency,
            line_properties,
            move_to_next_open_period,
            fiscal_year,
        )
    log.info("legal_entity_set_up", legal_entity=legal_entity_id, created=created)
    return await legal_entity_setup(conn, legal_entity_id)


async def add_exchange_rate(
    conn: DbConnection,
    legal_entity_id: str,
    *,
    from_currency: str,
    to_currency: str,
    valid_from: date,
    rate: Decimal,
) -> LegalEntitySetup:
    """Add (or replace) the rate of a currency pair from a date on (domain rule 5); returns the
    legal entity's setup. `NotFound` when the legal entity does not exist."""
    async with conn.transaction():
        await repository.add_exchange_rate(
            conn, legal_entity_id, from_currency, to_currency, valid_from, rate
        )
    return await legal_entity_setup(conn, legal_entity_id)


async def set_fiscal_period(
    conn: DbConnection, legal_entity_id: str, *, year: int, month: int, closed: bool
) -> LegalEntitySetup:
    """Open or close one monthly period (domain rule 7); returns the legal entity's setup.
    `NotFound` when the legal entity does not exist."""
    async with conn.transaction():
        await repository.set_fiscal_period(conn, legal_entity_id, year, month, closed)
    log.info(
        "fiscal_period_set",
        legal_entity=legal_entity_id,
        period=f"{year:04d}-{month:02d}",
        closed=closed,
    )
    return await legal_entity_setup(conn, legal_entity_id)


@dataclass(frozen=True)
class StoredFixedRate:
    """A contract's fixed rate as Finance holds it, and whether Finance has seen the contract
    (on a proposal or a staged row) yet."""

    fixed: ContractFixedRate
    updated_at: datetime
    contract_seen: bool


async def set_contract_fixed_rate(
    conn: DbConnection,
    contract_id: str,
    *,
    legal_entity: str,
    contract_currency: str,
    rate: Decimal,
) -> StoredFixedRate:
    """Set or change a project contract's fixed exchange rate (project accountant).

    From then on the import, the journal postings and the invoice postings of the contract
    convert with it, whatever the exchange-rate table says (domain rule 5). Rows posted before
    keep the rate they were posted at.
    """
    async with conn.transaction():
        exists = await repository.lock_legal_entity(conn, legal_entity)
        setups = await repository.load_setups(conn, [legal_entity]) if exists else {}
        await repository.get_contract_fixed_rate_row(conn, contract_id, for_update=True)
        known = await repository.known_contract(conn, contract_id)
        fixed = fix_contract_rate(
            contract_id, setups.get(legal_entity), legal_entity, contract_currency, rate, known
        )
        row = await repository.upsert_contract_fixed_rate(conn, fixed)
    log.info(
        "contract_fixed_rate_set",
        contract_id=contract_id,
        legal_entity=legal_entity,
        pair=f"{fixed.contract_currency}->{fixed.accounting_currency}",
        rate=str(fixed.rate),
        contract_seen=known is not None,
    )
    return StoredFixedRate(fixed, row["updated_at"], known is not None)


async def contract_fixed_rate(conn: DbConnection, contract_id: str) -> StoredFixedRate:
    """A contract's fixed exchange rate; `NotFound` when it has none."""
    row = await repository.get_contract_fixed_rate_row(conn, contract_id)
    if row is None:
        raise NotFound(f"contract {contract_id} has no fixed exchange rate")
    known = await repository.known_contract(conn, contract_id)
    return StoredFixedRate(
        repository.fixed_rate_from_record(row), row["updated_at"], known is not None
    )


async def remove_contract_fixed_rate(conn: DbConnection, contract_id: str) -> None:
    """Remove a contract's fixed rate: its next postings convert with the exchange-rate table.

    `NotFound` when it has none.
    """
    async with conn.transaction():
        removed = await repository.delete_contract_fixed_rate(conn, contract_id)
        if not removed:
            raise NotFound(f"contract {contract_id} has no fixed exchange rate")
    log.info("contract_fixed_rate_removed", contract_id=contract_id)


# --- proposal header edits made in Finance --------------------------------------------------------


async def edit_proposal_header(
    conn: DbConnection,
    settings: Settings,
    proposal_id: UUID,
    requested: Mapping[str, str | None],
    *,
    new_proposal_id: UUID | None = None,
) -> asyncpg.Record:
    """Apply a header edit made in Finance (`requested`: Finance-owned fields and their new
    values) and publish `proposal-header-changed`; returns the header as stored.

    The proposal's row lock serialises edits with its posting: an edit waiting for a posting
    finds the proposal posted and is refused (its header is read-only). The change stays in
    Finance: the bridge refuses to carry it back, the proposal map being one way (domain rule 2).
    """
    pid = str(proposal_id)
    async with conn.transaction():
        record = await repository.get_proposal(conn, pid, for_update=True)
        changes = header_edit(
            pid,
            ProposalStatus(record["status"]),
            record["invoice_number"],
            {name: record[name] for name in EDITABLE_HEADER_FIELDS},
            requested,
            str(new_proposal_id) if new_proposal_id is not None else None,
        )
        if changes:
            await repository.update_proposal_header_fields(conn, pid, changes)
            await outbox.add_many(
                conn, [_header_changed(settings, proposal_id, record["legal_entity"], changes)]
            )
            log.info(
                "proposal_header_edited_in_finance",
                invoice_id=pid,
                fields=sorted(changes),
                note=ONE_WAY_MESSAGE,
            )
        return await repository.get_proposal(conn, pid)


def _header_changed(
    settings: Settings, proposal_id: UUID, legal_entity: str, changes: Mapping[str, str | None]
) -> tuple[str, str | None, Envelope[Any]]:
    """The `proposal-header-changed` outbox row of an edit, keyed and correlated by the
    proposal's id (the invoice id)."""
    pid = str(proposal_id)
    return (
        topic_name(Topic.PROPOSAL_HEADER_CHANGED, settings.topic_prefix),
        pid,
        outbox.envelope(
            PROPOSAL_HEADER_CHANGED,
            SOURCE,
            ProposalHeaderChanged(
                invoice_id=proposal_id,
                legal_entity=legal_entity,
                changed_fields={k: "" if v is None else str(v) for k, v in changes.items()},
            ),
            correlation_id=pid,
        ),
    )
