"""Outbox → broker → inbox on the real broker and PostgreSQL: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infra import broker, topics
from schemas.topics import dlq_name
from services.common import outbox
from services.common.inbox import InboxConsumer, Subscription
from services.common.kafka import make_producer
from services.common.outbox import OutboxRelay, unpublished_count
from services.common.ports import free_port
from services.common.settings import Settings
from tests.integration.delivery_fixtures import (
    Ping,
    add_ping,
    effects,
    open_service_pool,
    record_effect,
)
from tests.waiting import holds, wait_for

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def running(*workers: OutboxRelay | InboxConsumer) -> AsyncIterator[None]:
    """Run relays/consumers as tasks for the block, then stop them and await their end."""
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield
    finally:
        for w in workers:
            w.stop()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)


@pytest.fixture
async def pools(settings: Settings) -> AsyncIterator[tuple[asyncpg.Pool, asyncpg.Pool]]:
    """Producer side on the dataverse database, consumer side on the finance database."""
    source = await open_service_pool(settings, "dataverse")
    target = await open_service_pool(settings, "finance")
    yield source, target
    await source.close()
    await target.close()


def consumer_of(settings: Settings, pool: asyncpg.Pool, topic: str) -> InboxConsumer:
    return InboxConsumer(
        pool, settings, f"{topic}-group", [Subscription(topic, Ping, record_effect)]
    )


async def test_committed_outbox_event_is_applied_once_in_another_database(
    settings: Settings, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    source, target = pools
    topic = f"{settings.topic_prefix}invoice-confirmed"
    async with source.acquire() as conn, conn.transaction():
        for n in range(50):
            await add_ping(conn, topic, n)
    consumer = consumer_of(settings, target, topic)
    async with running(OutboxRelay(source, settings, "src"), consumer):
        await wait_for(lambda: _count_is(target, 50), what="50 effects")
        async with source.acquire() as conn:
            assert await unpublished_count(conn) == 0
    assert sorted(await effects(target)) == list(range(50))


async def _count_is(pool: asyncpg.Pool, n: int) -> bool:
    return len(await effects(pool)) >= n


async def test_rolled_back_transaction_publishes_nothing(
    settings: Settings, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    source, target = pools
    topic = f"{settings.topic_prefix}invoice-confirmed"
    with pytest.raises(RuntimeError, match="business rule"):
        async with source.acquire() as conn, conn.transaction():
            await add_ping(conn, topic, 666)
            raise RuntimeError("business rule refused the change")
    # A marker committed afterwards proves the relay and consumer ran past the rolled-back one.
    async with source.acquire() as conn, conn.transaction():
        await add_ping(conn, topic, 1)
    async with running(OutboxRelay(source, settings, "src"), consumer_of(settings, target, topic)):
        await wait_for(lambda: _count_is(target, 1), what="the marker")
    assert await effects(target) == [1]
    async with source.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM dwsim_outbox") == 1


class DiesBeforeOffsetCommit(InboxConsumer):
    """A consumer that commits its database transaction and then dies: no offset commit."""

    async def _commit_offsets(self, offsets: dict[TopicPartition, int]) -> None:
        return None


async def test_redelivery_after_db_commit_without_offset_commit_applies_nothing_twice(
    settings: Settings, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    source, target = pools
    topic = f"{settings.topic_prefix}invoice-confirmed"
    async with source.acquire() as conn, conn.transaction():
        for n in range(20):
            await add_ping(conn, topic, n)
    group = f"{topic}-group"
    dying = DiesBeforeOffsetCommit(
        target, settings, group, [Subscription(topic, Ping, record_effect)]
    )
    async with running(OutboxRelay(source, settings, "src"), dying):
        await wait_for(lambda: _count_is(target, 20), what="20 effects")
    # Same group, no committed offsets: the replacement re-reads every message.
    again = consumer_of(settings, target, topic)
    async with running(again):
        await wait_for(holds(lambda: again.stats.duplicates >= 20), what="20 re-reads")
    assert again.stats.applied == 0
    assert sorted(await effects(target)) == list(range(20))


async def test_relay_started_while_broker_down_publishes_everything_once_it_is_back(
    infra: Settings, tmp_path: Any, pools: tuple[asyncpg.Pool, asyncpg.Pool], settings: Settings
) -> None:
    source, target = pools
    port = free_port()
    own_broker = settings.model_copy(
        update={"home": tmp_path, "broker_port": port, "kafka_bootstrap": None}
    )
    down = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{port}"})
    topic = f"{settings.topic_prefix}invoice-confirmed"
    async with source.acquire() as conn, conn.transaction():
        for n in range(30):
            await add_ping(conn, topic, n)
    relay = OutboxRelay(source, down, "src")
    async with running(relay):
        await wait_for(holds(lambda: relay.last_error is not None), what="a failure")
        async with source.acquire() as conn:
            assert await unpublished_count(conn) == 30
        broker.start(own_broker)
        try:
            await topics.provision_async(down)
            async with running(consumer_of(down, target, topic)):
                await wait_for(lambda: _count_is(target, 30), deadline_s=60, what="30 effects")
        finally:
            broker.stop(own_broker)
    assert sorted(await effects(target)) == list(range(30))


async def test_malformed_message_goes_to_dlq_with_reason_and_next_is_applied(
    settings: Settings, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    source, target = pools
    topic = f"{settings.topic_prefix}invoice-confirmed"
    producer: AIOKafkaProducer = make_producer(settings, "poison")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b'{"not": "an envelope"', key=b"k1")
        bad_payload = {
            "event_id": "8f1b8d55-5c1a-4c43-a1a5-0d1b8e1c2f10",
            "event_type": "ping",
            "occurred_at": "2026-11-01T10:00:00Z",
            "source": "test",
            "payload": {"n": "not-a-number"},
        }
        await producer.send_and_wait(topic, json.dumps(bad_payload).encode(), key=b"k1")
    finally:
        await producer.stop()
    async with source.acquire() as conn, conn.transaction():
        await add_ping(conn, topic, 7)
    async with running(OutboxRelay(source, settings, "src"), consumer_of(settings, target, topic)):
        await wait_for(lambda: _count_is(target, 1), what="the good message")
        letters = await _read_all(settings, dlq_name(topic), 2)
    assert await effects(target) == [7]
    reasons = [json.loads(v)["reason"] for v in letters]
    assert any("Invalid JSON" in r or "json" in r.lower() for r in reasons), reasons
    assert any("payload.n" in r for r in reasons), reasons
    assert json.loads(letters[0])["value"].startswith('{"not"')


async def _read_all(settings: Settings, topic: str, n: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers(),
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
    )
    await consumer.start()
    values: list[bytes] = []
    try:

        async def enough() -> bool:
            batch = await consumer.getmany(timeout_ms=100)
            values.extend(m.value for ms in batch.values() for m in ms)
            return len(values) >= n

        await wait_for(enough, what=f"{n} messages on {topic}")
    finally:
        await consumer.stop()
    return sorted(
        values, key=lambda v: 0 if v.startswith(b'{"topic"') and b'"offset":0' in v else 1
    )


async def test_handler_failure_parks_event_with_reason_and_loop_continues(
    settings: Settings, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    source, target = pools
    topic = f"{settings.topic_prefix}invoice-confirmed"

    async def refuse_odd(conn: Any, event: Any) -> None:
        if event.payload.n % 2:
            raise ValueError(f"odd number {event.payload.n} refused")
        await record_effect(conn, event)

    async with source.acquire() as conn, conn.transaction():
        for n in range(6):
            await add_ping(conn, topic, n)
    consumer = InboxConsumer(target, settings, "g", [Subscription(topic, Ping, refuse_odd)])
    async with running(OutboxRelay(source, settings, "src"), consumer):
        await wait_for(
            holds(lambda: consumer.stats.parked + consumer.stats.applied >= 6),
            what="6 events handled",
        )
    assert sorted(await effects(target)) == [0, 2, 4]
    async with target.acquire() as conn:
        parked = await conn.fetch("SELECT reason FROM dwsim_parked_event ORDER BY reason")
    assert [r["reason"] for r in parked] == [
        "ValueError: odd number 1 refused",
        "ValueError: odd number 3 refused",
        "ValueError: odd number 5 refused",
    ]


async def test_relay_never_passes_over_a_row_whose_transaction_commits_late(
    settings: Settings, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    """Regression: ids are taken at insert; a row of a slow transaction gets a smaller id than a
    row committed before it. Publishing by id must wait for the slow one, not skip it."""
    source, target = pools
    topic = f"{settings.topic_prefix}invoice-confirmed"
    relay = OutboxRelay(source, settings, "src")
    async with running(relay, consumer_of(settings, target, topic)):
        async with source.acquire() as slow:
            slow_tx = slow.transaction()
            await slow_tx.start()
            await add_ping(slow, topic, 0)  # gets the smaller id, commits last
            async with source.acquire() as fast, fast.transaction():
                await add_ping(fast, topic, 7)  # same key as 0 (k0), commits first
            polls = relay.polls
            await wait_for(holds(lambda: relay.polls >= polls + 2), what="the relay to look")
            async with source.acquire() as conn:
                # Only the fast row is visible here, and it must still wait for the slow one.
                assert await unpublished_count(conn) == 1, "published past an open transaction"
            await slow_tx.commit()
        await wait_for(lambda: _count_is(target, 2), what="both effects")
    assert await effects(target) == [0, 7]


@pytest.mark.parametrize("size", [1_500_000, 6_000_000], ids=["1.5MB", "6MB"])
async def test_relay_parks_an_outbox_row_too_large_to_publish_and_publishes_the_rows_after_it(
    settings: Settings, pools: tuple[asyncpg.Pool, asyncpg.Pool], size: int
) -> None:
    """Regression (issue 18): the relay retried a row over the producer's limit forever, and
    nothing written after it was ever published."""
    source, target = pools
    topic = f"{settings.topic_prefix}invoice-confirmed"
    big = outbox.envelope("ping", "test", Ping(n=8, note="x" * size), correlation_id="inv-8")
    async with source.acquire() as conn, conn.transaction():
        await add_ping(conn, topic, 1)  # key k1, as are 8 and 15
        await outbox.add(conn, topic, "k1", big)
        await add_ping(conn, topic, 15)
    async with running(OutboxRelay(source, settings, "src"), consumer_of(settings, target, topic)):
        await wait_for(lambda: _count_is(target, 2), what="the rows around the large one")
        async with source.acquire() as conn:
            assert await unpublished_count(conn) == 0
            [parked] = await outbox.parked_rows(conn)
    assert await effects(target) == [1, 15]
    assert parked["event_id"] == big.event_id and parked["topic"] == topic
    assert parked["size"] > size
    assert parked["reason"] == (
        f"message too large: {parked['size']} bytes, over the limit of "
        f"{settings.max_message_bytes} (max_message_bytes); it can never be published"
    )


async def test_batch_that_keeps_failing_is_halved_until_the_failing_message_is_dead_lettered(
    settings: Settings, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    """Regression (issue 18): a batch failing for anything but an outage was retried forever
    (here parking the failing event itself fails), so no event of it was ever applied."""
    source, target = pools
    topic = f"{settings.topic_prefix}invoice-confirmed"
    async with target.acquire() as conn:
        # Parking refuses this event: a failure that no retry of the batch can get past.
        await conn.execute(
            "ALTER TABLE dwsim_parked_event ADD CONSTRAINT refuses_unparkable "
            "CHECK (reason NOT LIKE '%unparkable%')"
        )

    async def refuse_35(conn: Any, event: Any) -> None:
        if event.payload.n == 35:
            raise ValueError("unparkable event 35")
        await record_effect(conn, event)

    async with source.acquire() as conn, conn.transaction():
        for n in (0, 7, 14, 35, 21, 28):  # one key (k0): one partition, in this order
            await add_ping(conn, topic, n)
    relay = OutboxRelay(source, settings, "src")
    async with running(relay):

        async def published() -> bool:
            async with source.acquire() as conn:
                return await unpublished_count(conn) == 0

        await wait_for(published, what="the six events published")
    # Started after: the six arrive in one fetch, one batch.
    consumer = InboxConsumer(target, settings, "g", [Subscription(topic, Ping, refuse_35)])
    async with running(consumer):
        await wait_for(lambda: _count_is(target, 5), what="the five other events")
        [letter] = await _read_all(settings, dlq_name(topic), 1)
    assert await effects(target) == [0, 7, 14, 21, 28]
    dead = json.loads(letter)
    assert dead["reason"].startswith("unprocessable: CheckViolationError"), dead["reason"]
    assert json.loads(dead["value"])["payload"]["n"] == 35
    assert dead["offset"] == 3 and not dead["truncated"]
    assert consumer.stats.dead_lettered == 1 and consumer.stats.last_error is None
