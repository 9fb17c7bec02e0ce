"""Application layer of Finance: one command, one transaction.

Each command locks what its rule reads or changes (`FOR SHARE` / `FOR UPDATE`), asks the pure
rules in `domain.py` what the change is, and writes it through `repository`, all in one
transaction: a rule that refuses (`FinanceRuleError`, HTTP 409) or a missing record
(`NotFound`, 404) rolls everything back, so nothing is written.

Lock order: legal entity, then the contract's fixed rate. Postings and imports only read fixed
rates (one statement each), so a rate changed while they run applies to the next one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from services.common.db import DbConnection
from services.common.errors import NotFound
from services.common.logging import get_logger
from services.finance import repository
from services.finance.domain import ContractFixedRate, fix_contract_rate

log = get_logger(__name__)


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
