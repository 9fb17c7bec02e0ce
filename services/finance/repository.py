"""Finance's SQL: every statement parameterised, rows turned into the domain's records.

Functions take an open connection and run inside the caller's transaction; the caller decides
the unit of work (a handler's inbox transaction, one import unit, one posting).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from schemas.vocabulary import BillingMethod, BillingType, TransactionClass, TransactionType
from services.common.db import DbConnection
from services.common.errors import NotFound
from services.finance.domain import (
    NUMBER_PREFIXES,
    AccountingStamp,
    ContractFixedRate,
    CustomerInvoice,
    ExchangeRate,
    FiscalPeriod,
    IntegrationJournal,
    JournalLine,
    KnownContract,
    LegalEntitySetup,
    NumberSequence,
    ProposalHeader,
    ProposalLine,
    ProposalStatus,
    RateSource,
    StagingRow,
    Voucher,
    entity_number,
    typical_line_properties,
)

# A row as asyncpg returns it, or any mapping with the same keys.
Row = asyncpg.Record | Mapping[str, Any]


def _s(value: Any) -> str | None:
    """A uuid (or anything) as the domain's string id; None stays None."""
    return None if value is None else str(value)


def _source(value: str | None) -> RateSource | None:
    return None if value is None else RateSource(value)


# --- lock order -----------------------------------------------------------------------------------


# --- legal entity setup -------------------------------------------------------------------------


async def upsert_legal_entity(
    conn: DbConnection,
    legal_entity_id: str,
    accounting_currency: str,
    line_properties: Mapping[str, str] | None,
    move_to_next_open_period: bool | None,
    fiscal_year: int | None,
) -> bool:
    """Create or update a legal entity's setup; returns True when it was created.

    `line_properties` given replaces the whole mapping; a new legal entity without one gets the
    typical mapping (domain `typical_line_properties`). `fiscal_year` adds its twelve open
    monthly periods (existing ones keep their state).
    """
    created: bool = await conn.fetchval(
        "INSERT INTO legal_entity (legal_entity_id, accounting_currency, move_to_next_open_period) "
        "VALUES ($1, $2, coalesce($3, false)) "
        "ON CONFLICT (legal_entity_id) DO UPDATE SET "
        "accounting_currency = EXCLUDED.accounting_currency, "
        "move_to_next_open_period = coalesce($3, legal_entity.move_to_next_open_period), "
        "updated_at = now() "
        "RETURNING (xmax = 0)",
        legal_entity_id,
        accounting_currency,
        move_to_next_open_period,
    )
    if line_properties is None and created:
        line_properties = {str(bt): lp for bt, lp in typical_line_properties().items()}
    if line_properties is not None:
        await conn.execute(
            "DELETE FROM line_property_mapping WHERE legal_entity_id = $1", legal_entity_id
        )
        await conn.executemany(
            "INSERT INTO line_property_mapping (legal_entity_id, billing_type, line_property) "
            "VALUES ($1, $2, $3)",
            [(legal_entity_id, bt, lp) for bt, lp in line_properties.items()],
        )
    if fiscal_year is not None:
        await conn.execute(
            "INSERT INTO fiscal_period (legal_entity_id, year, month) "
            "SELECT $1, $2, m FROM generate_series(1, 12) AS m ON CONFLICT DO NOTHING",
            legal_entity_id,
            fiscal_year,
        )
    return created


async def add_exchange_rate(
    conn: DbConnection,
    legal_entity_id: str,
    from_currency: str,
    to_currency: str,
    valid_from: date,
    rate: Decimal,
) -> None:
    """Record (or replace) the rate of a currency pair from a date on."""
    await _require_legal_entity(conn, legal_entity_id)
    await conn.execute(
        "INSERT INTO exchange_rate (legal_entity_id, from_currency, to_currency, valid_from, rate) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (legal_entity_id, from_currency, to_currency, "
        "valid_from) DO UPDATE SET rate = EXCLUDED.rate",
        legal_entity_id,
        from_currency,
        to_currency,
        valid_from,
        rate,
    )


async def set_fiscal_period(
    conn: DbConnection, legal_entity_id: str, year: int, month: int, closed: bool
) -> None:
    """Open or close one monthly period, creating it when the calendar lacks it."""
    await _require_legal_entity(conn, legal_entity_id)
    await conn.execute(
        "INSERT INTO fiscal_period (legal_entity_id, year, month, closed) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (legal_entity_id, year, month) DO UPDATE SET closed = EXCLUDED.closed",
        legal_entity_id,
        year,
        month,
        closed,
    )


async def _require_legal_entity(conn: DbConnection, legal_entity_id: str) -> None:
    exists = await conn.fetchval(
        "SELECT true FROM legal_entity WHERE legal_entity_id = $1", legal_entity_id
    )
    if not exists:
        raise NotFound(f"no legal entity {legal_entity_id}")


async def load_setups(
    conn: DbConnection, legal_entity_ids: Iterable[str] | None = None
) -> dict[str, LegalEntitySetup]:
    """The domain's setup of the named legal entities (all when None); unknown ids are absent."""
    ids = None if legal_entity_ids is None else sorted(set(legal_entity_ids))
    # One statement, each entity with its mapping, rates and periods as arrays of rows: the
    # setup is read by every consumed batch and every import, and was four round trips.
    entities = await conn.fetch(
        "SELECT e.legal_entity_id, e.accounting_currency, e.move_to_next_open_period, "
        "ARRAY(SELECT (m.billing_type, m.line_property) FROM line_property_mapping m "
        "WHERE m.legal_entity_id = e.legal_entity_id) AS line_properties, "
        "ARRAY(SELECT (r.from_currency, r.to_currency, r.valid_from, r.rate) "
        "FROM exchange_rate r WHERE r.legal_entity_id = e.legal_entity_id) AS exchange_rates, "
        "ARRAY(SELECT (p.year, p.month, p.closed) FROM fiscal_period p "
        "WHERE p.legal_entity_id = e.legal_entity_id ORDER BY p.year, p.month) AS fiscal_periods "
        "FROM legal_entity e WHERE $1::text[] IS NULL OR e.legal_entity_id = ANY($1)",
        ids,
    )
    return {
        e["legal_entity_id"]: LegalEntitySetup(
            legal_entity_id=e["legal_entity_id"],
            accounting_currency=e["accounting_currency"],
            line_properties={
                BillingType(billing_type): line_property
                for billing_type, line_property in e["line_properties"]
            },
            exchange_rates=tuple(ExchangeRate(*rate) for rate in e["exchange_rates"]),
            fiscal_periods=tuple(FiscalPeriod(*period) for period in e["fiscal_periods"]),
            move_to_next_open_period=e["move_to_next_open_period"],
        )
        for e in entities
    }


# --- contract fixed exchange rates ----------------------------------------------------------------


async def lock_legal_entity(conn: DbConnection, legal_entity_id: str) -> bool:
    """Hold a legal entity's row (FOR SHARE) until the transaction ends, so its accounting
    currency cannot change under a rule that reads it; returns whether the entity exists."""
    found = await conn.fetchval(
        "SELECT true FROM legal_entity WHERE legal_entity_id = $1 FOR SHARE", legal_entity_id
    )
    return bool(found)


def fixed_rate_from_record(r: Row) -> ContractFixedRate:
    """A stored fixed rate as the domain's `ContractFixedRate`."""
    return ContractFixedRate(
        contract_id=str(r["contract_id"]),
        legal_entity=r["legal_entity_id"],
        contract_currency=r["contract_currency"],
        accounting_currency=r["accounting_currency"],
        rate=r["rate"],
    )


async def get_contract_fixed_rate_row(
    conn: DbConnection, contract_id: str, for_update: bool = False
) -> asyncpg.Record | None:
    """A contract's fixed rate as stored, or None; `for_update` locks it."""
    lock = " FOR UPDATE" if for_update else ""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT * FROM contract_fixed_exchange_rate WHERE contract_id = $1{lock}", contract_id
    )
    return row


async def contract_fixed_rates(
    conn: DbConnection, contract_ids: Iterable[str | None]
) -> dict[str, ContractFixedRate]:
    """The fixed rates of these contracts, by contract id (contracts without one are absent)."""
    ids = sorted({c for c in contract_ids if c})
    if not ids:
        return {}
    rows = await conn.fetch(
        "SELECT * FROM contract_fixed_exchange_rate WHERE contract_id = ANY($1::uuid[])", ids
    )
    return {str(r["contract_id"]): fixed_rate_from_record(r) for r in rows}


async def upsert_contract_fixed_rate(
    conn: DbConnection, fixed: ContractFixedRate
) -> asyncpg.Record:
    """Store a contract's fixed rate, replacing the one it had; returns the stored row."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "INSERT INTO contract_fixed_exchange_rate (contract_id, legal_entity_id, "
        "contract_currency, accounting_currency, rate) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (contract_id) DO UPDATE SET legal_entity_id = EXCLUDED.legal_entity_id, "
        "contract_currency = EXCLUDED.contract_currency, "
        "accounting_currency = EXCLUDED.accounting_currency, rate = EXCLUDED.rate, "
        "updated_at = now() RETURNING *",
        fixed.contract_id,
        fixed.legal_entity,
        fixed.contract_currency,
        fixed.accounting_currency,
        fixed.rate,
    )
    assert row is not None  # an upsert with RETURNING always answers its row
    return row


async def delete_contract_fixed_rate(conn: DbConnection, contract_id: str) -> bool:
    """Remove a contract's fixed rate; returns whether it had one."""
    result: str = await conn.execute(
        "DELETE FROM contract_fixed_exchange_rate WHERE contract_id = $1", contract_id
    )
    return result.endswith(" 1")


async def known_contract(conn: DbConnection, contract_id: str) -> KnownContract | None:
    """What Finance's proposals and valid staged rows say of a contract, or None if none
    names it yet."""
    row = await conn.fetchrow(
        "SELECT array_agg(DISTINCT legal_entity) AS entities, "
        "array_agg(DISTINCT currency) AS currencies FROM ("
        "SELECT legal_entity, currency FROM project_invoice_proposal WHERE contract_id = $1 "
        "UNION ALL SELECT legal_entity, currency FROM actuals_staging "
        "WHERE contract_id = $1 AND status = 'valid') seen",
        contract_id,
    )
    if row is None or row["entities"] is None:
        return None
    return KnownContract(
        contract_id, frozenset(row["entities"]), frozenset(c.strip() for c in row["currencies"])
    )


# --- number sequences -----------------------------------------------------------------------------


async def next_numbers(
    conn: DbConnection, legal_entity: str, sequence: NumberSequence, count: int
) -> list[str]:
    """Take `count` consecutive numbers of a legal entity's sequence, inside the caller's
    transaction, e.g. USMF-CIV-000001 (domain `entity_number`).

    Each legal entity has its own counters (migration 003). The upsert locks the entity's
    sequence row until the transaction ends, so two postings of one entity take numbers one
    after the other and never the same one; a rollback gives the numbers back (no gaps); two
    entities never wait on each other. On the entity's first use the row is created: a second
    transaction inserting it at the same time waits for the first and then updates its row.
    """
    if count == 0:
        return []
    row = await conn.fetchrow(
        "INSERT INTO legal_entity_number_sequence (legal_entity_id, name, prefix, next_value) "
        "VALUES ($1, $2, $3, 1 + $4) ON CONFLICT (legal_entity_id, name) DO UPDATE "
        "SET next_value = legal_entity_number_sequence.next_value + $4 "
        "RETURNING prefix, next_value - $4 AS first",
        legal_entity,
        str(sequence),
        NUMBER_PREFIXES[sequence],
        count,
    )
    assert row is not None  # an upsert with RETURNING always answers its row
    return [entity_number(legal_entity, row["prefix"], row["first"] + i) for i in range(count)]


# --- actuals staging ------------------------------------------------------------------------------

_STAGING_COLUMNS = (
    "actual_id",
    "legal_entity",
    "transaction_type",
    "transaction_class",
    "billing_type",
    "billing_method",
    "quantity",
    "price",
    "amount",
    "currency",
    "document_date",
    "accounting_date",
    "project_id",
    "contract_id",
    "contract_line_id",
    "customer_id",
    "resource",
    "resource_category",
    "invoice_id",
    "unbilled_actual_id",
    "reverses_actual_id",
    "status",
    "reason",
)
_STAGING_TYPES = (
    "uuid",
    "text",
    "text",
    "text",
    "text",
    "text",
    "numeric",
    "numeric",
    "numeric",
    "text",
    "date",
    "date",
    "uuid",
    "uuid",
    "uuid",
    "uuid",
    "text",
    "text",
    "uuid",
    "uuid",
    "uuid",
    "text",
    "text",
)


async def insert_staging_rows(conn: DbConnection, rows: Sequence[Mapping[str, Any]]) -> set[str]:
    """Insert staged actuals in one statement; an actual already staged is left as it is.

    Returns the ids actually inserted; the others were there already (a re-send).
    """
    if not rows:
        return set()
    columns = ", ".join(_STAGING_COLUMNS)
    arrays = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(_STAGING_TYPES))
    inserted = await conn.fetch(
        f"INSERT INTO actuals_staging ({columns}) SELECT * FROM unnest({arrays}) "
        "ON CONFLICT (actual_id) DO NOTHING RETURNING actual_id",
        *[[row.get(c) for row in rows] for c in _STAGING_COLUMNS],
    )
    return {str(r["actual_id"]) for r in inserted}


async def revalidate_staging_row(conn: DbConnection, row: Mapping[str, Any]) -> bool:
    """Replace a staged row that was refused (status invalid) by its re-sent version.

    A valid row is never touched: an actual is append-only, so a re-send carries nothing new.
    Returns True when an invalid row was replaced.
    """
    assignments = ", ".join(f"{c} = ${i + 1}" for i, c in enumerate(_STAGING_COLUMNS) if i > 0)
    result: str = await conn.execute(
        f"UPDATE actuals_staging SET {assignments}, updated_at = now() "
        "WHERE actual_id = $1 AND status = 'invalid'",
        *[row.get(c) for c in _STAGING_COLUMNS],
    )
    return result.endswith(" 1")


async def staging_status(conn: DbConnection, actual_id: str) -> asyncpg.Record | None:
    """Status and reason of a staged actual, or None when it was never received."""
    return await conn.fetchrow(
        "SELECT status, reason FROM actuals_staging WHERE actual_id = $1", actual_id
    )


def staging_row_from_record(r: Row) -> StagingRow:
    """A stored staging row as the domain's `StagingRow` (only valid rows are converted)."""
    stamp = None
    if r["voucher"] is not None:
        stamp = AccountingStamp(
            actual_id=str(r["actual_id"]),
            voucher=r["voucher"],
            voucher_date=r["voucher_date"],
            exchange_rate=r["exchange_rate"],
            accounting_currency_amount=r["accounting_currency_amount"],
            tax_amount=r["tax_amount"] if r["tax_amount"] is not None else Decimal("0.00"),
            exchange_rate_source=_source(r["exchange_rate_source"]),
        )
    return StagingRow(
        actual_id=str(r["actual_id"]),
        legal_entity=r["legal_entity"],
        transaction_type=TransactionType(r["transaction_type"]),
        transaction_class=TransactionClass(r["transaction_class"]),
        billing_type=BillingType(r["billing_type"]),
        quantity=r["quantity"],
        amount=r["amount"],
        currency=r["currency"],
        accounting_date=r["accounting_date"],
        project_id=str(r["project_id"]),
        billing_method=BillingMethod(r["billing_method"]) if r["billing_method"] else None,
        contract_id=_s(r["contract_id"]),
        contract_line_id=_s(r["contract_line_id"]),
        customer_id=_s(r["customer_id"]),
        invoice_id=_s(r["invoice_id"]),
        unbilled_actual_id=_s(r["unbilled_actual_id"]),
        reverses_actual_id=_s(r["reverses_actual_id"]),
        imported=r["imported"],
        accounting=stamp,
    )


async def lock_pending_journal_rows(conn: DbConnection, legal_entity: str) -> list[asyncpg.Record]:
    """Lock a legal entity's valid, unimported cost and unbilled-sales rows for this import.

    FOR UPDATE makes a second import run (periodic and on demand) wait here; when it gets the
    rows, PostgreSQL re-checks `NOT imported` on their committed version, so rows the first run
    imported drop out and no staged row is ever imported twice.
    """
    return await conn.fetch(
        "SELECT * FROM actuals_staging WHERE legal_entity = $1 AND status = 'valid' "
        "AND NOT imported AND transaction_type IN ('cost', 'unbilled_sales') "
        "ORDER BY actual_id FOR UPDATE",
        legal_entity,
    )


async def legal_entities_with_pending_journal_rows(conn: DbConnection) -> list[str]:
    """Legal entities that have valid, unimported cost or unbilled-sales rows."""
    rows = await conn.fetch(
        "SELECT DISTINCT legal_entity FROM actuals_staging WHERE status = 'valid' "
        "AND NOT imported AND transaction_type IN ('cost', 'unbilled_sales') ORDER BY 1"
    )
    return [r["legal_entity"] for r in rows]


async def count_billed_rows(conn: DbConnection, invoice_id: str) -> int:
    """Valid billed-sales rows of one invoice in staging, imported or not."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM actuals_staging WHERE invoice_id = $1 AND status = 'valid' "
        "AND transaction_type = 'billed_sales'",
        invoice_id,
    )
    return count


async def lock_billed_rows(conn: DbConnection, invoice_id: str) -> list[asyncpg.Record]:
    """Lock the valid billed-sales rows of one invoice (see `lock_pending_journal_rows`)."""
    return await conn.fetch(
        "SELECT * FROM actuals_staging WHERE invoice_id = $1 AND status = 'valid' "
        "AND transaction_type = 'billed_sales' ORDER BY actual_id FOR UPDATE",
        invoice_id,
    )


async def unbilled_rows_for(
    conn: DbConnection, billed: Sequence[StagingRow]
) -> list[asyncpg.Record]:
    """The staged unbilled-sales rows billed rows may be matched against.

    A billed row linked to its unbilled actual needs that row only; one without the link is
    matched by contract line, quantity and amount (`domain.matching_unbilled`), so it needs its
    project's unbilled rows.
    """
    linked = sorted({r.unbilled_actual_id for r in billed if r.unbilled_actual_id})
    projects = sorted({r.project_id for r in billed if not r.unbilled_actual_id})
    return await conn.fetch(
        "SELECT * FROM actuals_staging WHERE status = 'valid' "
        "AND transaction_type = 'unbilled_sales' "
        "AND (actual_id = ANY($1::uuid[]) OR project_id = ANY($2::uuid[]))",
        linked,
        projects,
    )


async def orphan_billed_rows(conn: DbConnection) -> list[asyncpg.Record]:
    """Valid, unimported billed rows whose proposal header has not arrived (or is not open)."""
    return await conn.fetch(
        "SELECT s.actual_id, s.invoice_id, p.status AS proposal_status "
        "FROM actuals_staging s LEFT JOIN project_invoice_proposal p "
        "ON p.proposal_id = s.invoice_id WHERE s.status = 'valid' AND NOT s.imported "
        "AND s.transaction_type = 'billed_sales' AND (p.proposal_id IS NULL OR p.status <> 'open')"
    )


async def set_import_reasons(conn: DbConnection, reasons: Mapping[str, str]) -> None:
    """Record why the import left each of these rows out (shown with the staging row)."""
    if not reasons:
        return
    await conn.execute(
        "UPDATE actuals_staging s SET import_reason = r.reason, updated_at = now() "
        "FROM unnest($1::uuid[], $2::text[]) AS r(actual_id, reason) "
        "WHERE s.actual_id = r.actual_id AND NOT s.imported "
        "AND s.import_reason IS DISTINCT FROM r.reason",
        list(reasons),
        list(reasons.values()),
    )


async def mark_imported(
    conn: DbConnection,
    actual_ids: Sequence[str],
    journal_id: str | None = None,
    proposal_id: str | None = None,
) -> None:
    """Mark staged rows imported into a journal or a proposal."""
    await conn.execute(
        "UPDATE actuals_staging SET imported = true, imported_at = now(), import_reason = NULL, "
        "journal_id = coalesce($2, journal_id), proposal_id = coalesce($3::uuid, proposal_id), "
        "updated_at = now() WHERE actual_id = ANY($1::uuid[])",
        list(actual_ids),
        journal_id,
        proposal_id,
    )


async def stamp_staging_rows(conn: DbConnection, stamps: Sequence[AccountingStamp]) -> None:
    """Write the accounting detail of a posting on its staged rows, in one statement."""
    if not stamps:
        return
    await conn.execute(
        "UPDATE actuals_staging s SET voucher = t.voucher, voucher_date = t.voucher_date, "
        "exchange_rate = t.rate, accounting_currency_amount = t.amount, tax_amount = t.tax, "
        "exchange_rate_source = t.source, updated_at = now() "
        "FROM unnest($1::uuid[], $2::text[], $3::date[], $4::numeric[], $5::numeric[], "
        "$6::numeric[], $7::text[]) AS t(actual_id, voucher, voucher_date, rate, amount, tax, "
        "source) WHERE s.actual_id = t.actual_id",
        [s.actual_id for s in stamps],
        [s.voucher for s in stamps],
        [s.voucher_date for s in stamps],
        [s.exchange_rate for s in stamps],
        [s.accounting_currency_amount for s in stamps],
        [s.tax_amount for s in stamps],
        [_s(s.exchange_rate_source) for s in stamps],
    )


async def list_staging(
    conn: DbConnection,
    legal_entity: str | None = None,
    invoice_id: str | None = None,
    imported: bool | None = None,
    status: str | None = None,
    transaction_type: str | None = None,
) -> list[asyncpg.Record]:
    """Staged rows, filtered, oldest first."""
    return await conn.fetch(
        f"SELECT * FROM actuals_staging WHERE {_STAGING_FILTER} ORDER BY received_at, actual_id",
        legal_entity,
        invoice_id,
        imported,
        status,
        transaction_type,
    )


async def count_staging(
    conn: DbConnection,
    legal_entity: str | None = None,
    invoice_id: str | None = None,
    imported: bool | None = None,
    status: str | None = None,
    transaction_type: str | None = None,
) -> tuple[int, datetime | None]:
    """How many staged rows match the same filters as `list_staging`, and when the latest
    of them was received (None when there is none)."""
    row = await conn.fetchrow(
        "SELECT count(*) AS count, max(received_at) AS last_received_at "
        f"FROM actuals_staging WHERE {_STAGING_FILTER}",
        legal_entity,
        invoice_id,
        imported,
        status,
        transaction_type,
    )
    assert row is not None  # an aggregate always answers one row
    return row["count"], row["last_received_at"]


_STAGING_FILTER = (
    "($1::text IS NULL OR legal_entity = $1) "
    "AND ($2::uuid IS NULL OR invoice_id = $2) AND ($3::boolean IS NULL OR imported = $3) "
    "AND ($4::text IS NULL OR status = $4) AND ($5::text IS NULL OR transaction_type = $5)"
)


# --- refused records ------------------------------------------------------------------------------


async def keep_refused(
    conn: DbConnection, topic: str, record_key: str, reason: str, payload: dict[str, Any]
) -> None:
    """Keep a refused record with its reason; a re-send refreshes it and counts the attempt."""
    await conn.execute(
        "INSERT INTO refused_record (topic, record_key, reason, payload) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (topic, record_key) DO UPDATE SET reason = EXCLUDED.reason, "
        "payload = EXCLUDED.payload, refused_at = now(), "
        "attempts = refused_record.attempts + 1",
        topic,
        record_key,
        reason,
        payload,
    )


async def forget_refused(conn: DbConnection, topic: str, record_key: str) -> None:
    """A refused record was applied after all (its setup was fixed): drop the refusal."""
    await conn.execute(
        "DELETE FROM refused_record WHERE topic = $1 AND record_key = $2", topic, record_key
    )


async def list_refused(conn: DbConnection) -> list[asyncpg.Record]:
    """Refused records, newest first."""
    return await conn.fetch("SELECT * FROM refused_record ORDER BY refused_at DESC")


# --- proposals ------------------------------------------------------------------------------------


async def upsert_proposal_header(conn: DbConnection, header: Mapping[str, Any]) -> str:
    """Create the header, or refresh an open one from a re-send; returns what happened.

    "created", "updated" (still open: the mapped fields are refreshed, Finance's own edits such
    as the sales tax group are kept) or "unchanged" (lines imported or posted: a confirmed
    invoice is final, so a re-send carries nothing that may change it).
    """
    result = await conn.fetchval(
        "INSERT INTO project_invoice_proposal (proposal_id, legal_entity, customer_id, "
        "contract_id, currency, invoice_date, proposal_total, sales_tax_amount, payment_terms, "
        "invoice_address, expected_billed_lines, is_corrective, corrected_proposal_id) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
        "ON CONFLICT (proposal_id) DO UPDATE SET legal_entity = EXCLUDED.legal_entity, "
        "customer_id = EXCLUDED.customer_id, contract_id = EXCLUDED.contract_id, "
        "currency = EXCLUDED.currency, invoice_date = EXCLUDED.invoice_date, "
        "proposal_total = EXCLUDED.proposal_total, "
        "sales_tax_amount = EXCLUDED.sales_tax_amount, "
        "payment_terms = EXCLUDED.payment_terms, invoice_address = EXCLUDED.invoice_address, "
        "expected_billed_lines = EXCLUDED.expected_billed_lines, "
        "is_corrective = EXCLUDED.is_corrective, "
        "corrected_proposal_id = EXCLUDED.corrected_proposal_id, updated_at = now() "
        "WHERE project_invoice_proposal.status = 'open' "
        "RETURNING CASE WHEN xmax = 0 THEN 'created' ELSE 'updated' END",
        header["proposal_id"],
        header["legal_entity"],
        header["customer_id"],
        header["contract_id"],
        header["currency"],
        header["invoice_date"],
        header["proposal_total"],
        header["sales_tax_amount"],
        header["payment_terms"],
        header["invoice_address"],
        header["expected_billed_lines"],
        header["is_corrective"],
        header["corrected_proposal_id"],
    )
    return str(result) if result is not None else "unchanged"


async def get_proposal(
    conn: DbConnection, proposal_id: str, for_update: bool = False
) -> asyncpg.Record:
    """A proposal header row; `for_update` locks it until the transaction ends."""
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT * FROM project_invoice_proposal WHERE proposal_id = $1{lock}", proposal_id
    )
    if row is None:
        raise NotFound(f"no proposal {proposal_id}")
    return row


async def proposal_exists(conn: DbConnection, proposal_id: str) -> bool:
    """Whether Finance holds the proposal (a confirmed invoice sent its header)."""
    found = await conn.fetchval(
        "SELECT true FROM project_invoice_proposal WHERE proposal_id = $1", proposal_id
    )
    return bool(found)


async def open_proposals_with_billed_counts(conn: DbConnection) -> list[asyncpg.Record]:
    """Proposals still waiting for their lines, each with `billed_staged`: its valid
    billed-sales rows in staging (see `count_billed_rows`); unlocked, in arrival order."""
    return await conn.fetch(
        "SELECT p.*, c.billed_staged FROM project_invoice_proposal p "
        "CROSS JOIN LATERAL (SELECT count(*) AS billed_staged FROM actuals_staging s "
        "WHERE s.invoice_id = p.proposal_id AND s.status = 'valid' "
        "AND s.transaction_type = 'billed_sales') c "
        "WHERE p.status = 'open' ORDER BY p.received_at, p.proposal_id"
    )


def proposal_header_from_record(r: Row) -> ProposalHeader:
    """A stored header as the domain's `ProposalHeader`."""
    return ProposalHeader(
        proposal_id=str(r["proposal_id"]),
        legal_entity=r["legal_entity"],
        customer_id=str(r["customer_id"]),
        contract_id=str(r["contract_id"]),
        currency=r["currency"],
        expected_billed_lines=r["expected_billed_lines"],
        tax_amount=r["sales_tax_amount"],
        status=ProposalStatus(r["status"]),
        waiting_reason=r["waiting_reason"],
        invoice_number=r["invoice_number"],
    )


async def set_open_waiting_reasons(conn: DbConnection, reasons: Mapping[str, str]) -> list[str]:
    """Record why open proposals have no lines yet, in one statement; a proposal that got its
    lines meanwhile is left alone. Returns the ids whose reason changed."""
    if not reasons:
        return []
    rows = await conn.fetch(
        "UPDATE project_invoice_proposal p SET waiting_reason = r.reason, updated_at = now() "
        "FROM unnest($1::uuid[], $2::text[]) AS r(proposal_id, reason) "
        "WHERE p.proposal_id = r.proposal_id AND p.status = 'open' "
        "AND p.waiting_reason IS DISTINCT FROM r.reason RETURNING p.proposal_id",
        list(reasons),
        list(reasons.values()),
    )
    return [str(r["proposal_id"]) for r in rows]


async def insert_proposal_lines(conn: DbConnection, lines: Sequence[ProposalLine]) -> None:
    """Insert a proposal's lines in one statement and mark the proposal lines_imported."""
    if not lines:
        return
    await conn.execute(
        "INSERT INTO proposal_line (proposal_id, line_number, actual_id, transaction_class, "
        "billing_type, line_property, quantity, amount, currency, project_id, contract_line_id, "
        "unbilled_actual_id, accrued_wip_rate) SELECT * FROM unnest($1::uuid[], $2::int[], "
        "$3::uuid[], $4::text[], $5::text[], $6::text[], $7::numeric[], $8::numeric[], "
        "$9::text[], $10::uuid[], $11::uuid[], $12::uuid[], $13::numeric[])",
        [line.proposal_id for line in lines],
        [line.line_number for line in lines],
        [line.actual_id for line in lines],
        [str(line.transaction_class) for line in lines],
        [str(line.billing_type) for line in lines],
        [line.line_property for line in lines],
        [line.quantity for line in lines],
        [line.amount for line in lines],
        [line.currency for line in lines],
        [line.project_id for line in lines],
        [line.contract_line_id for line in lines],
        [line.unbilled_actual_id for line in lines],
        [line.accrued_wip_rate for line in lines],
    )
    proposal_ids = sorted({line.proposal_id for line in lines})
    await conn.execute(
        "UPDATE project_invoice_proposal SET status = 'lines_imported', waiting_reason = NULL, "
        "updated_at = now() WHERE proposal_id = ANY($1::uuid[])",
        proposal_ids,
    )


async def proposal_line_rows(conn: DbConnection, proposal_id: str) -> list[asyncpg.Record]:
    """A proposal's lines as stored, in line order."""
    return await conn.fetch(
        "SELECT * FROM proposal_line WHERE proposal_id = $1 ORDER BY line_number", proposal_id
    )


async def proposal_lines(conn: DbConnection, proposal_id: str) -> list[ProposalLine]:
    """A proposal's lines as the domain's records, in line order."""
    rows = await proposal_line_rows(conn, proposal_id)
    return [
        ProposalLine(
            proposal_id=str(r["proposal_id"]),
            line_number=r["line_number"],
            actual_id=str(r["actual_id"]),
            transaction_class=TransactionClass(r["transaction_class"]),
            billing_type=BillingType(r["billing_type"]),
            line_property=r["line_property"],
            quantity=r["quantity"],
            amount=r["amount"],
            currency=r["currency"],
            project_id=str(r["project_id"]),
            contract_line_id=_s(r["contract_line_id"]),
            unbilled_actual_id=_s(r["unbilled_actual_id"]),
            accrued_wip_rate=r["accrued_wip_rate"],
        )
        for r in rows
    ]


async def list_proposals(conn: DbConnection, status: str | None = None) -> list[asyncpg.Record]:
    """Proposal headers, filtered by status, oldest first."""
    return await conn.fetch(
        "SELECT * FROM project_invoice_proposal WHERE ($1::text IS NULL OR status = $1) "
        "ORDER BY received_at, proposal_id",
        status,
    )


async def update_proposal_header_fields(
    conn: DbConnection, proposal_id: str, changes: Mapping[str, Any]
) -> None:
    """Apply Finance-side header edits (only the columns the API allows reach here)."""
    allowed = {"sales_tax_group", "payment_terms"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"header fields {sorted(unknown)} cannot be edited")
    for column, value in changes.items():
        # The column name comes from the fixed set above, never from the caller's text.
        await conn.execute(
            f"UPDATE project_invoice_proposal SET {column} = $2, updated_at = now() "
            "WHERE proposal_id = $1",
            proposal_id,
            value,
        )


async def mark_proposal_posted(conn: DbConnection, proposal_id: str, invoice_number: str) -> None:
    """The proposal became a customer invoice."""
    await conn.execute(
        "UPDATE project_invoice_proposal SET status = 'posted', invoice_number = $2, "
        "waiting_reason = NULL, updated_at = now() WHERE proposal_id = $1",
        proposal_id,
        invoice_number,
    )


# --- integration journals -------------------------------------------------------------------------


async def insert_journal(
    conn: DbConnection,
    journal_id: str,
    legal_entity: str,
    period_start: date,
    lines: Sequence[JournalLine],
) -> None:
    """Insert a draft journal and its lines (one statement for the lines)."""
    await conn.execute(
        "INSERT INTO integration_journal (journal_id, legal_entity, period_start) "
        "VALUES ($1, $2, $3)",
        journal_id,
        legal_entity,
        period_start,
    )
    await conn.execute(
        "INSERT INTO integration_journal_line (journal_id, line_number, actual_id, "
        "transaction_type, transaction_class, billing_type, line_property, quantity, amount, "
        "currency, accounting_date, exchange_rate, project_id, contract_id, "
        "exchange_rate_source) "
        "SELECT $1, * FROM unnest($2::int[], $3::uuid[], $4::text[], $5::text[], $6::text[], "
        "$7::text[], $8::numeric[], $9::numeric[], $10::text[], $11::date[], $12::numeric[], "
        "$13::uuid[], $14::uuid[], $15::text[])",
        journal_id,
        [line.line_number for line in lines],
        [line.actual_id for line in lines],
        [str(line.transaction_type) for line in lines],
        [str(line.transaction_class) for line in lines],
        [str(line.billing_type) for line in lines],
        [line.line_property for line in lines],
        [line.quantity for line in lines],
        [line.amount for line in lines],
        [line.currency for line in lines],
        [line.accounting_date for line in lines],
        [line.exchange_rate for line in lines],
        [line.project_id for line in lines],
        [line.contract_id for line in lines],
        [_s(line.exchange_rate_source) for line in lines],
    )


async def get_journal_row(
    conn: DbConnection, journal_id: str, for_update: bool = False
) -> asyncpg.Record:
    """A journal header row; `for_update` locks it until the transaction ends."""
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT * FROM integration_journal WHERE journal_id = $1{lock}", journal_id
    )
    if row is None:
        raise NotFound(f"no integration journal {journal_id}")
    return row


async def journal_line_rows(conn: DbConnection, journal_id: str) -> list[asyncpg.Record]:
    """A journal's lines in line order."""
    return await conn.fetch(
        "SELECT * FROM integration_journal_line WHERE journal_id = $1 ORDER BY line_number",
        journal_id,
    )


def journal_from_records(header: Row, lines: Sequence[Row]) -> IntegrationJournal:
    """A stored journal as the domain's `IntegrationJournal`."""
    return IntegrationJournal(
        journal_id=header["journal_id"],
        legal_entity=header["legal_entity"],
        posted=header["status"] == "posted",
        lines=tuple(
            JournalLine(
                line_number=r["line_number"],
                actual_id=str(r["actual_id"]),
                transaction_type=TransactionType(r["transaction_type"]),
                transaction_class=TransactionClass(r["transaction_class"]),
                billing_type=BillingType(r["billing_type"]),
                line_property=r["line_property"],
                quantity=r["quantity"],
                amount=r["amount"],
                currency=r["currency"],
                accounting_date=r["accounting_date"],
                exchange_rate=r["exchange_rate"],
                project_id=str(r["project_id"]),
                contract_id=_s(r["contract_id"]),
                exchange_rate_source=_source(r["exchange_rate_source"]),
            )
            for r in lines
        ),
    )


async def list_journals(
    conn: DbConnection, status: str | None = None, legal_entity: str | None = None
) -> list[asyncpg.Record]:
    """Journal headers with their line counts, filtered, oldest first."""
    return await conn.fetch(
        "SELECT j.*, (SELECT count(*) FROM integration_journal_line l "
        "WHERE l.journal_id = j.journal_id) AS line_count FROM integration_journal j "
        "WHERE ($1::text IS NULL OR j.status = $1) AND ($2::text IS NULL OR j.legal_entity = $2) "
        "ORDER BY j.created_at, j.journal_id",
        status,
        legal_entity,
    )


async def mark_journal_posted(
    conn: DbConnection, journal_id: str, line_vouchers: Mapping[str, str]
) -> None:
    """The journal is posted: its status, and each line's voucher."""
    await conn.execute(
        "UPDATE integration_journal SET status = 'posted', posted_at = now(), error_reason = NULL "
        "WHERE journal_id = $1",
        journal_id,
    )
    await conn.execute(
        "UPDATE integration_journal_line l SET voucher = v.voucher "
        "FROM unnest($2::uuid[], $3::text[]) AS v(actual_id, voucher) "
        "WHERE l.journal_id = $1 AND l.actual_id = v.actual_id",
        journal_id,
        list(line_vouchers),
        list(line_vouchers.values()),
    )


async def mark_journal_error(conn: DbConnection, journal_id: str, reason: str) -> None:
    """Posting the journal failed; keep the reason visible (posting it again is allowed)."""
    await conn.execute(
        "UPDATE integration_journal SET status = 'error', error_reason = $2 "
        "WHERE journal_id = $1 AND status <> 'posted'",
        journal_id,
        reason,
    )


# --- vouchers, ledger, customer invoices ----------------------------------------------------------


async def insert_vouchers(
    conn: DbConnection, vouchers: Sequence[Voucher], source_type: str, source_id: str
) -> None:
    """Insert posted vouchers and all their ledger entries (two statements in all)."""
    if not vouchers:
        return
    await conn.execute(
        "INSERT INTO voucher (voucher, legal_entity, accounting_date, currency, source_type, "
        "source_id) SELECT v, le, d, c, $5, $6 FROM unnest($1::text[], $2::text[], $3::date[], "
        "$4::text[]) AS t(v, le, d, c)",
        [v.voucher for v in vouchers],
        [v.legal_entity for v in vouchers],
        [v.accounting_date for v in vouchers],
        [v.currency for v in vouchers],
        source_type,
        source_id,
    )
    entries = [(v.voucher, n, e) for v in vouchers for n, e in enumerate(v.entries, start=1)]
    if not entries:
        return
    await conn.execute(
        "INSERT INTO ledger_entry (voucher, entry_number, account, amount, actual_id) "
        "SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::numeric[], $5::uuid[])",
        [v for v, _, _ in entries],
        [n for _, n, _ in entries],
        [e.account for _, _, e in entries],
        [e.amount for _, _, e in entries],
        [e.actual_id for _, _, e in entries],
    )


async def insert_customer_invoice(conn: DbConnection, invoice: CustomerInvoice) -> None:
    """Insert a posted customer invoice."""
    await conn.execute(
        "INSERT INTO customer_invoice (invoice_number, proposal_id, legal_entity, customer_id, "
        "invoice_date, currency, net_amount, tax_amount, total_amount, exchange_rate, "
        "accounting_currency, total_accounting_amount, voucher, exchange_rate_source) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        invoice.invoice_number,
        invoice.proposal_id,
        invoice.legal_entity,
        invoice.customer_id,
        invoice.invoice_date,
        invoice.currency,
        invoice.net_amount,
        invoice.tax_amount,
        invoice.total_amount,
        invoice.exchange_rate,
        invoice.accounting_currency,
        invoice.total_accounting_amount,
        invoice.voucher,
        _s(invoice.exchange_rate_source),
    )


async def list_customer_invoices(conn: DbConnection) -> list[asyncpg.Record]:
    """Posted customer invoices in number order."""
    return await conn.fetch("SELECT * FROM customer_invoice ORDER BY invoice_number")


async def get_customer_invoice(conn: DbConnection, invoice_number: str) -> asyncpg.Record:
    """One posted customer invoice by its number."""
    row = await conn.fetchrow(
        "SELECT * FROM customer_invoice WHERE invoice_number = $1", invoice_number
    )
    if row is None:
        raise NotFound(f"no customer invoice {invoice_number}")
    return row


async def get_voucher(conn: DbConnection, voucher: str) -> asyncpg.Record:
    """One voucher header."""
    row = await conn.fetchrow("SELECT * FROM voucher WHERE voucher = $1", voucher)
    if row is None:
        raise NotFound(f"no voucher {voucher}")
    return row


async def ledger_entries(
    conn: DbConnection, voucher: str | None = None, account: str | None = None
) -> list[asyncpg.Record]:
    """Ledger entries with their voucher's date and legal entity, filtered."""
    return await conn.fetch(
        "SELECT e.*, v.legal_entity, v.accounting_date, v.currency FROM ledger_entry e "
        "JOIN voucher v USING (voucher) WHERE ($1::text IS NULL OR e.voucher = $1) "
        "AND ($2::text IS NULL OR e.account = $2) ORDER BY e.voucher, e.entry_number",
        voucher,
        account,
    )
