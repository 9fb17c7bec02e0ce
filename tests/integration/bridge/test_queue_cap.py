"""The paused queue's cap holds on every path a record can take into the queue (domain.md:
"Microsoft caps the queue at one day or 1 GB, after which new changes are refused until
someone resumes"), in-process on the real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import uuid4

import pytest

from schemas.receipts import ReceiptOutcome
from services.bridge.domain import (
    MapAction,
)
from services.bridge.handlers import BridgeProcessor, seed
from services.common.db import create_pool, migrate_service
from services.common.settings import Settings
from tests.integration.bridge.bridge_harness import actual_created
from tests.integration.bridge.test_batches import MIGRATIONS, Messages, kinds, receipt_for, records

pytestmark = pytest.mark.integration


@pytest.fixture
async def processor(settings: Settings) -> AsyncIterator[BridgeProcessor]:
    """The bridge on its own database with a queue that one record fills (1 byte cap)."""
    capped = settings.model_copy(update={"queue_max_bytes": 1})
    pool = await create_pool(capped.service_database_url("bridge"))
    await migrate_service(pool, "bridge", MIGRATIONS)
    await seed(pool)
    yield BridgeProcessor(pool, capped)
    await pool.close()


async def test_retry_while_paused_at_the_queue_cap_is_refused_not_queued(
    settings: Settings, processor: BridgeProcessor
) -> None:
    """Proves that retrying an error while its map is paused and its queue is at the cap
    fails the record with the queue-limit reason (a new queue_limit error) instead of
    enqueueing it past the cap, as intake does. Before the fix the retry answered "queued"
    and the queue held two records over a one-record cap."""
    messages = Messages(settings)
    invoice_id = uuid4()
    refused, later = actual_created(invoice_id=invoice_id), actual_created(invoice_id=invoice_id)
    assert kinds(await processor.process_batch([messages.actual(refused)])) == ["applied"]
    [record] = await records(processor.pool)
    rejection = messages.receipts(receipt_for(record, ReceiptOutcome.REJECTED, "period closed"))
    assert kinds(await processor.process_batch([rejection])) == ["applied"]
    async with processor.pool.acquire() as conn:
        error_id = await conn.fetchval("SELECT id FROM bridge_error")
    await processor.commands.change_state("actuals", MapAction.PAUSE)
    assert kinds(await processor.process_batch([messages.actual(later)])) == ["applied"]

    [result] = await processor.commands.retry_errors([error_id])

    assert result["status"] == "failed", result
    assert result["reason"].startswith("queue limit reached"), result
    async with processor.pool.acquire() as conn:
        queued = await conn.fetchval("SELECT count(*) FROM bridge_queue")
        errors = await conn.fetch("SELECT error_type, status FROM bridge_error ORDER BY id")
    assert queued == 1
    assert [(e["error_type"], e["status"]) for e in errors] == [
        ("target_refused", "retried"),
        ("queue_limit", "open"),
    ]
    statuses = {r["record_key"]: (r["status"], r["reason"]) for r in await records(processor.pool)}
    assert statuses[str(refused.actual_id)][0] == "failed"
    assert statuses[str(refused.actual_id)][1].startswith("queue limit reached")
    assert statuses[str(later.actual_id)] == ("queued", None)
