"""Number sequences per legal entity: journals, customer invoices and vouchers are numbered per
entity, consecutively, independently of other entities, never twice, with no gaps."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from uuid import UUID, uuid4

import pytest

from services.finance import repository
from services.finance.domain import NumberSequence
from tests.integration.finance.conftest import (
    Finance,
    actual_record,
    header_record,
    milestone_record,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


async def _milestone_invoice(finance: Finance, legal_entity: str) -> UUID:
    """A milestone invoice of one legal entity, staged with its header."""
    invoice_id = uuid4()
    await finance.header(
        header_record(
            invoice_id,
            expected=1,
            DataAreaId=legal_entity,
            ProposalTotal=Decimal("1000.00"),
            SalesTaxAmount=Decimal("0.00"),
        )
    )
    await finance.actual(milestone_record(invoice_id, "1000.00", msdyn_legalentity=legal_entity))
    return invoice_id


async def _post(finance: Finance, invoice_id: UUID) -> dict[str, str]:
    response = await finance.call("POST", f"/proposals/{invoice_id}/post", {}, finance.clerk)
    assert response.status_code == 200, response.text
    invoice: dict[str, str] = response.json()
    return invoice


async def test_each_legal_entity_numbers_its_invoices_vouchers_and_journals_on_its_own(
    finance: Finance,
) -> None:
    await finance.setup_legal_entity("USPM", "USD")
    await finance.setup_legal_entity("USMF", "USD")
    invoices = [
        await _milestone_invoice(finance, entity) for entity in ("USPM", "USMF", "USPM", "USPM")
    ]
    for entity in ("USPM", "USMF"):
        await finance.actual(actual_record("Cost", msdyn_legalentity=entity))
    await finance.wait_receipts(10)
    summary = (await finance.call("POST", "/import", {})).json()
    assert sorted(summary["journals_created"]) == ["USMF-PJ-000001", "USPM-PJ-000001"]
    assert sorted(summary["proposals_with_lines"]) == sorted(str(i) for i in invoices)

    posted = [await _post(finance, invoice_id) for invoice_id in invoices]
    assert [(p["invoice_number"], p["voucher"]) for p in posted] == [
        ("USPM-CIV-000001", "USPM-VOU-000001"),
        ("USMF-CIV-000001", "USMF-VOU-000001"),
        ("USPM-CIV-000002", "USPM-VOU-000002"),
        ("USPM-CIV-000003", "USPM-VOU-000003"),
    ]
    journals = (await finance.call("POST", "/journals/post", {})).json()
    assert sorted(v for j in journals for v in j["vouchers"]) == [
        "USMF-VOU-000002",
        "USPM-VOU-000004",
    ]


async def test_two_postings_of_one_entity_racing_never_share_a_number_and_a_rollback_gives_back(
    finance: Finance,
) -> None:
    """The sequence row's lock: the second transaction waits for the first and then takes the
    next numbers; a rolled-back transaction's numbers are taken again (no gaps)."""
    await finance.setup_legal_entity("USPM", "USD")
    async with finance.pool.acquire() as first, finance.pool.acquire() as second:
        tx1 = first.transaction()
        await tx1.start()
        taken_first = await repository.next_numbers(first, "USPM", NumberSequence.VOUCHER, 3)
        tx2 = second.transaction()
        await tx2.start()
        racing = asyncio.create_task(
            repository.next_numbers(second, "USPM", NumberSequence.VOUCHER, 2)
        )
        pid = second.get_server_pid()

        async def second_waits_for_the_lock() -> bool:
            async with finance.pool.acquire() as conn:
                waiting: bool = await conn.fetchval(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
                )
                return waiting

        await wait_for(second_waits_for_the_lock, what="the second posting to wait for the row")
        assert not racing.done()
        # Another entity's sequence does not wait on USPM's.
        async with finance.pool.acquire() as other, other.transaction():
            await finance.setup_legal_entity("USMF", "USD")
            assert await repository.next_numbers(other, "USMF", NumberSequence.VOUCHER, 1) == [
                "USMF-VOU-000001"
            ]
        await tx1.commit()
        taken_second = await asyncio.wait_for(racing, 10)
        await tx2.rollback()
    assert taken_first == ["USPM-VOU-000001", "USPM-VOU-000002", "USPM-VOU-000003"]
    assert taken_second == ["USPM-VOU-000004", "USPM-VOU-000005"]
    async with finance.pool.acquire() as conn, conn.transaction():
        again = await repository.next_numbers(conn, "USPM", NumberSequence.VOUCHER, 1)
    assert again == ["USPM-VOU-000004"], "the rolled-back numbers are given back"
