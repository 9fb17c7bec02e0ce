"""The two-minute limit in the bridge's batch processing, on the real PostgreSQL with a clock the
test moves (docs/bridge.md, "Two minutes, in a simulator"): a source transaction whose records
still arrive more than two minutes after its first fails from there on when Microsoft's limits
apply, and counts as would-fail when they do not; a redelivered message changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest

from schemas.dataverse_events import ActualCreated, ActualsCreated, SourceTransaction
from schemas.topics import Topic
from services.bridge import queries
from services.bridge.handlers import BridgeProcessor, seed
from services.bridge.table_maps import ACTUALS_MAP_NAME
from services.common.db import create_pool, migrate_service
from services.common.inbox import Message
from services.common.settings import Settings
from tests.integration.bridge.bridge_harness import actual_created, envelope
from tests.integration.bridge.test_batches import Messages, kinds, records

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).resolve().parents[3] / "services" / "bridge" / "migrations"
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


class Clock:
    """The bridge's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def clock() -> Clock:
    return Clock()


@pytest.fixture
async def processors(settings: Settings, clock: Clock) -> AsyncIterator[dict[str, BridgeProcessor]]:
    """A bridge processor per `platform_limits` value, on one migrated, seeded database."""
    pool = await create_pool(settings.service_database_url("bridge"))
    await migrate_service(pool, "bridge", MIGRATIONS)
    await seed(pool)
    yield {
        value: BridgeProcessor(pool, settings.model_copy(update={"platform_limits": value}), clock)
        for value in ("none", "microsoft")
    }
    await pool.close()


def message(
    messages: Messages, transaction: SourceTransaction, actuals: list[ActualCreated]
) -> Message:
    """One `actuals-created` message of the transaction, as Dataverse's relay sends it."""
    invoice_id = str(actuals[0].invoice_id)
    payload = ActualsCreated(actuals=actuals, transaction=transaction)
    return messages.message(
        Topic.ACTUALS_CREATED,
        invoice_id,
        envelope("actuals.created", "dataverse", payload, invoice_id),
    )


def two_messages(messages: Messages) -> tuple[Message, Message, list[str]]:
    """A transaction of four actuals of one invoice in two messages; their record keys."""
    invoice_id = uuid4()
    actuals = [actual_created(invoice_id=invoice_id) for _ in range(4)]
    transaction = SourceTransaction(transaction_id=uuid4(), records=4, legal_entities=1)
    first = message(messages, transaction, actuals[:2])
    second = message(messages, transaction, actuals[2:])
    return first, second, [str(a.actual_id) for a in actuals]


async def test_records_past_two_minutes_fail_with_the_limits_and_a_redelivery_changes_nothing(
    settings: Settings, processors: dict[str, BridgeProcessor], clock: Clock
) -> None:
    """Proves that with platform_limits=microsoft the first message's records are forwarded
    (within two minutes), the second's, arriving 2 min 1 s later, fail as platform-limit
    errors with the duration as reason, and the first message delivered again later is a
    duplicate that adds no error."""
    processor = processors["microsoft"]
    first, second, keys = two_messages(Messages(settings))

    assert kinds(await processor.process_batch([first])) == ["applied"]
    clock.now = T0 + timedelta(minutes=2, seconds=1)
    assert kinds(await processor.process_batch([second])) == ["applied"]
    clock.now = T0 + timedelta(minutes=5)
    assert kinds(await processor.process_batch([first])) == ["duplicate"]

    stored = {r["record_key"]: r for r in await records(processor.pool)}
    assert [stored[k]["status"] for k in keys] == ["pending", "pending", "failed", "failed"]
    assert stored[keys[2]]["reason"].startswith(
        "platform limit: transaction still delivering after 121 s > 120 s per dual-write "
        "transaction; source transaction "
    )
    async with processor.pool.acquire() as conn:
        errors = await queries.list_errors(conn, map_name=ACTUALS_MAP_NAME)
        stats = (await queries.stats(conn))[ACTUALS_MAP_NAME]
    assert [(e["record_key"], e["error_type"]) for e in errors] == [
        (keys[2], "platform_limit"),
        (keys[3], "platform_limit"),
    ]
    assert stats["transactions_failed_platform_limits"] == 1


async def test_without_limits_a_late_transaction_is_synced_and_counted_once(
    settings: Settings, processors: dict[str, BridgeProcessor], clock: Clock
) -> None:
    """Proves that with platform_limits=none the same late records are forwarded, no error is
    raised, and the transaction counts once as would-fail in production."""
    processor = processors["none"]
    first, second, keys = two_messages(Messages(settings))

    await processor.process_batch([first])
    clock.now = T0 + timedelta(minutes=3)
    await processor.process_batch([second])

    stored = {r["record_key"]: r for r in await records(processor.pool)}
    assert [stored[k]["status"] for k in keys] == ["pending"] * 4
    async with processor.pool.acquire() as conn:
        assert await queries.list_errors(conn) == []
        stats = (await queries.stats(conn))[ACTUALS_MAP_NAME]
        [over] = await queries.over_limit_transactions(conn)
    assert stats["transactions_would_fail_in_production"] == 1
    assert over["outcome"] == "would_fail" and "after 180 s" in over["breach"]
