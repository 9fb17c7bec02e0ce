"""Two transactions racing: a posting and a consumer batch lock in the same order."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import uuid4

import asyncpg
import pytest

from schemas.envelope import Envelope
from services.finance.handlers import apply_proposal_header, apply_staging_actual
from services.finance.posting import post_proposal_invoice
from tests.integration.finance.conftest import (
    PROPOSAL_MAP,
    Finance,
    actual_record,
    header_record,
    milestone_record,
    staging_event,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def _header(payload: Any) -> Envelope[Any]:
    return Envelope[Any](
        event_type="proposal.header", source=PROPOSAL_MAP, payload=payload, causation_id=uuid4()
    )


async def _waits_for_a_lock(pool: asyncpg.Pool, pid: int) -> bool:
    async with pool.acquire() as conn:
        waiting: bool = await conn.fetchval(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
        )
        return waiting


async def test_posting_while_a_consumer_batch_re_applies_its_header_does_not_deadlock(
    finance: Finance,
) -> None:
    """Regression: the batch answered a receipt and then upserted the header the posting had
    locked, while the posting waited for the outbox's (then) write lock: deadlock. The outbox
    now takes no lock at all, so the two only ever wait on rows, in one order."""
    await finance.setup_legal_entity()
    invoice_id = uuid4()
    header = header_record(invoice_id, expected=1)
    await finance.header(header)
    await finance.actual(milestone_record(invoice_id, "1600.00"))
    await finance.wait_receipts(2)
    summary = (await finance.call("POST", "/import", {})).json()
    assert summary["proposals_with_lines"] == [str(invoice_id)]

    async with finance.pool.acquire() as batch, finance.pool.acquire() as clerk:
        transaction = batch.transaction()
        await transaction.start()
        try:
            # The consumer's batch: one event applied and answered...
            await apply_staging_actual(
                batch, finance.settings, staging_event([(actual_record("Cost"), uuid4())])
            )
            # ...while the clerk posts the proposal...
            posting = asyncio.create_task(
                post_proposal_invoice(clerk, finance.settings, str(invoice_id))
            )
            pid = clerk.get_server_pid()

            async def posting_done_or_waiting() -> bool:
                return posting.done() or await _waits_for_a_lock(finance.pool, pid)

            await wait_for(posting_done_or_waiting, what="posting to finish or wait")
            # ...and the next event of the batch is a re-send of the proposal's header.
            await apply_proposal_header(batch, finance.settings, _header(header))
        finally:
            await transaction.commit()
        invoice_number = await asyncio.wait_for(posting, 30)
    assert invoice_number == "USPM-CIV-000001"
    assert (await finance.get(f"/proposals/{invoice_id}"))["status"] == "posted"
