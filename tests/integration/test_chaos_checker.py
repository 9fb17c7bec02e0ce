"""The chaos checker on seeded databases: silent on a consistent world, and each planted defect
(a lost proposal line, a duplicate staging row, a doubled voucher, a reordered stamp) reported
with its ids. The checker's role reads and never writes.

The world is written with plain SQL as each service's own role, on the schemas the services'
migrations create: the checker is judged against the tables, not against the services' code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from uuid import UUID, uuid4

import asyncpg
import pytest

from infra.postgres import checker_database_url
from services.common.db import create_pool, migrate_service
from services.common.settings import PROJECT_ROOT, SERVICES, Settings
from services.simulator.chaos_checker import CheckerUrls, CheckReport, check

pytestmark = pytest.mark.integration

ENTITY = "USMF"
POSTED_AT = datetime(2026, 10, 2, 12, 0, tzinfo=UTC)
STAMPED_AT = POSTED_AT + timedelta(minutes=1)
DAY = date(2026, 10, 1)


@dataclass(frozen=True)
class World:
    """The ids of the seeded invoice: two time entries, each unbilled and then billed."""

    invoice_id: UUID
    unbilled: tuple[UUID, UUID]
    billed: tuple[UUID, UUID]
    journal_voucher: str = "USMF-VOU-000001"
    invoice_voucher: str = "USMF-VOU-000002"


async def _migrate(settings: Settings) -> None:
    for service in SERVICES:
        pool = await create_pool(settings.service_database_url(service), max_size=2)
        try:
            await migrate_service(pool, service, PROJECT_ROOT / "services" / service / "migrations")
        finally:
            await pool.close()


@pytest.fixture
async def world(settings: Settings) -> AsyncIterator[World]:
    """The three databases migrated, and one invoice through the whole cycle seeded."""
    await _migrate(settings)
    seeded = World(uuid4(), (uuid4(), uuid4()), (uuid4(), uuid4()))
    await _seed_dataverse(settings, seeded)
    await _seed_finance(settings, seeded)
    yield seeded


async def _as(settings: Settings, service: str) -> asyncpg.Connection:
    return await asyncpg.connect(settings.service_database_url(service))


async def _seed_dataverse(settings: Settings, w: World) -> None:
    conn = await _as(settings, "dataverse")
    try:
        account, project, contract = uuid4(), uuid4(), uuid4()
        await conn.execute(
            "INSERT INTO account (account_id, name, legal_entity) VALUES ($1, 'Contoso', $2)",
            account,
            ENTITY,
        )
        await conn.execute(
            "INSERT INTO project (project_id, name, legal_entity, customer_id) "
            "VALUES ($1, 'P', $2, $3)",
            project,
            ENTITY,
            account,
        )
        await conn.execute(
            "INSERT INTO project_contract (contract_id, name, legal_entity, customer_id, "
            "currency) VALUES ($1, 'C', $2, $3, 'USD')",
            contract,
            ENTITY,
            account,
        )
        await conn.execute(
            "INSERT INTO proforma_invoice (invoice_id, invoice_number, contract_id, customer_id, "
            "currency, legal_entity, invoice_date, status, expected_billed_lines, confirmed_at) "
            "VALUES ($1, 'INV-1', $2, $3, 'USD', $4, $5, 'confirmed', 2, $6)",
            w.invoice_id,
            contract,
            account,
            ENTITY,
            DAY,
            POSTED_AT - timedelta(minutes=5),
        )
        rows = [(a, "unbilled_sales", None, w.journal_voucher) for a in w.unbilled] + [
            (a, "billed_sales", w.invoice_id, w.invoice_voucher) for a in w.billed
        ]
        for actual_id, transaction_type, invoice_id, voucher in rows:
            await conn.execute(
                "INSERT INTO msdyn_actual (actual_id, transaction_type, transaction_class, "
                "billing_type, adjustment_status, quantity, unit_price, amount, currency, "
                "document_date, accounting_date, legal_entity, project_id, contract_id, "
                "invoice_id, voucher, accounting_updated_at) VALUES ($1, $2, 'time', "
                "'chargeable', 'none', 8, 200, 1600, 'USD', $3, $3, $4, $5, $6, $7, $8, $9)",
                actual_id,
                transaction_type,
                DAY,
                ENTITY,
                project,
                contract,
                invoice_id,
                voucher,
                STAMPED_AT,
            )
    finally:
        await conn.close()


async def _seed_finance(settings: Settings, w: World) -> None:
    conn = await _as(settings, "finance")
    try:
        await conn.execute(
            "INSERT INTO legal_entity (legal_entity_id, accounting_currency) VALUES ($1, 'USD')",
            ENTITY,
        )
        project, contract, customer = uuid4(), uuid4(), uuid4()
        staged = [(a, "unbilled_sales", None, w.journal_voucher) for a in w.unbilled] + [
            (a, "billed_sales", w.invoice_id, w.invoice_voucher) for a in w.billed
        ]
        for actual_id, transaction_type, invoice_id, voucher in staged:
            await _stage(conn, actual_id, transaction_type, invoice_id, voucher, project)
        for voucher, source_type, actuals in (
            (w.journal_voucher, "integration_journal", w.unbilled),
            (w.invoice_voucher, "customer_invoice", w.billed),
        ):
            await _post_voucher(conn, voucher, source_type, actuals)
        await conn.execute(
            "INSERT INTO project_invoice_proposal (proposal_id, legal_entity, customer_id, "
            "contract_id, currency, invoice_date, proposal_total, sales_tax_amount, "
            "expected_billed_lines, status, invoice_number) VALUES ($1, $2, $3, $4, 'USD', $5, "
            "3200, 0, 2, 'posted', 'USMF-CIV-000001')",
            w.invoice_id,
            ENTITY,
            customer,
            contract,
            DAY,
        )
        for n, actual_id in enumerate(w.billed, start=1):
            await conn.execute(
                "INSERT INTO proposal_line (proposal_id, line_number, actual_id, "
                "transaction_class, billing_type, line_property, quantity, amount, currency, "
                "project_id) VALUES ($1, $2, $3, 'time', 'chargeable', 'Chargeable', 8, 1600, "
                "'USD', $4)",
                w.invoice_id,
                n,
                actual_id,
                project,
            )
        await conn.execute(
            "INSERT INTO customer_invoice (invoice_number, proposal_id, legal_entity, "
            "customer_id, invoice_date, currency, net_amount, tax_amount, total_amount, "
            "exchange_rate, accounting_currency, total_accounting_amount, voucher) VALUES "
            "('USMF-CIV-000001', $1, $2, $3, $4, 'USD', 3200, 0, 3200, 1, 'USD', 3200, $5)",
            w.invoice_id,
            ENTITY,
            customer,
            DAY,
            w.invoice_voucher,
        )
    finally:
        await conn.close()


async def _stage(
    conn: asyncpg.Connection,
    actual_id: UUID,
    transaction_type: str,
    invoice_id: UUID | None,
    voucher: str | None,
    project: UUID,
) -> None:
    await conn.execute(
        "INSERT INTO actuals_staging (actual_id, legal_entity, transaction_type, "
        "transaction_class, billing_type, quantity, price, amount, currency, document_date, "
        "accounting_date, project_id, invoice_id, status, imported, voucher) VALUES ($1, $2, "
        "$3, 'time', 'chargeable', 8, 200, 1600, 'USD', $4, $4, $5, $6, 'valid', true, $7)",
        actual_id,
        ENTITY,
        transaction_type,
        DAY,
        project,
        invoice_id,
        voucher,
    )


async def _post_voucher(
    conn: asyncpg.Connection, voucher: str, source_type: str, actuals: tuple[UUID, ...]
) -> None:
    """A balanced voucher: per actual, a debit and a credit of its amount."""
    await conn.execute(
        "INSERT INTO voucher (voucher, legal_entity, accounting_date, currency, source_type, "
        "source_id, posted_at) VALUES ($1, $2, $3, 'USD', $4, $1, $5)",
        voucher,
        ENTITY,
        DAY,
        source_type,
        POSTED_AT,
    )
    n = 0
    for actual_id in actuals:
        for account, amount in (("receivable", Decimal(1600)), ("revenue", Decimal(-1600))):
            n += 1
            await conn.execute(
                "INSERT INTO ledger_entry (voucher, entry_number, account, amount, actual_id) "
                "VALUES ($1, $2, $3, $4, $5)",
                voucher,
                n,
                account,
                amount,
                actual_id,
            )


async def _check(settings: Settings) -> CheckReport:
    return await check(CheckerUrls(*(checker_database_url(settings, s) for s in SERVICES)))


async def test_a_consistent_world_has_no_finding(settings: Settings, world: World) -> None:
    report = await _check(settings)
    assert report.findings == []
    assert report.read["confirmed invoices"] == 1
    assert report.read["billed actuals"] == 2
    assert report.read["staging rows"] == 4


async def test_a_lost_proposal_line_is_reported_with_its_ids(
    settings: Settings, world: World
) -> None:
    conn = await _as(settings, "finance")
    try:
        await conn.execute("DELETE FROM proposal_line WHERE actual_id = $1", world.billed[1])
    finally:
        await conn.close()
    report = await _check(settings)
    assert report.counts() == {"lost": 1, "duplicated": 0, "reordered": 0, "mismatched": 0}
    (lost,) = report.of("lost")
    assert lost.kind == "proposal line"
    assert lost.ids == {"invoice_id": str(world.invoice_id), "actual_id": str(world.billed[1])}


async def test_a_duplicate_staging_row_is_reported_with_its_id(
    settings: Settings, world: World
) -> None:
    conn = await _as(settings, "finance")
    try:
        # The schema's key makes a second row impossible today; the checker must not lean on
        # it (a migration could drop it), so the test drops it to plant the duplicate.
        await conn.execute(
            "ALTER TABLE actuals_staging DROP CONSTRAINT actuals_staging_pkey CASCADE"
        )
        project = await conn.fetchval("SELECT project_id FROM actuals_staging LIMIT 1")
        await _stage(
            conn, world.unbilled[0], "unbilled_sales", None, world.journal_voucher, project
        )
    finally:
        await conn.close()
    report = await _check(settings)
    assert report.counts() == {"lost": 0, "duplicated": 1, "reordered": 0, "mismatched": 0}
    (duplicate,) = report.of("duplicated")
    assert duplicate.kind == "staging row"
    assert duplicate.ids == {"actual_id": str(world.unbilled[0])}


async def test_a_doubled_voucher_is_reported_with_both_vouchers(
    settings: Settings, world: World
) -> None:
    conn = await _as(settings, "finance")
    try:
        await _post_voucher(conn, "USMF-VOU-000003", "customer_invoice", (world.billed[0],))
    finally:
        await conn.close()
    report = await _check(settings)
    assert report.counts() == {"lost": 0, "duplicated": 1, "reordered": 0, "mismatched": 0}
    (doubled,) = report.of("duplicated")
    assert doubled.kind == "voucher"
    assert doubled.ids == {
        "actual_id": str(world.billed[0]),
        "vouchers": f"{world.invoice_voucher},USMF-VOU-000003",
    }


async def test_a_stamp_before_its_posting_is_reported_as_reordered(
    settings: Settings, world: World
) -> None:
    conn = await _as(settings, "dataverse")
    try:
        await conn.execute(
            "UPDATE msdyn_actual SET accounting_updated_at = $2 WHERE actual_id = $1",
            world.billed[0],
            POSTED_AT - timedelta(seconds=1),
        )
    finally:
        await conn.close()
    report = await _check(settings)
    assert report.counts() == {"lost": 0, "duplicated": 0, "reordered": 1, "mismatched": 0}
    (reordered,) = report.of("reordered")
    assert reordered.kind == "stamp before posting"
    assert reordered.ids == {"actual_id": str(world.billed[0]), "voucher": world.invoice_voucher}


@pytest.mark.parametrize("service", SERVICES)
async def test_the_checker_role_cannot_write(
    settings: Settings, world: World, service: str
) -> None:
    conn = await asyncpg.connect(checker_database_url(settings, service))
    try:
        assert await conn.fetchval("SELECT count(*) FROM dwsim_inbox") == 0
        statement = "DELETE FROM dwsim_inbox"
        # Every transaction of the role is read-only by default...
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await conn.execute(statement)
        # ...and with that default lifted, it still holds no privilege but SELECT.
        await conn.execute("SET default_transaction_read_only = off")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE TABLE planted (id int)")
    finally:
        await conn.close()
