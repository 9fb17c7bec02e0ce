"""One delivery contract, run against every consumer of dwsim: the services' plain
`InboxConsumer` and the bridge's faust worker (a real `python -m services.bridge` process).

Both hand what they fetched to `services.common.inbox.apply_messages`; these cases prove that
they therefore behave the same on the real broker and PostgreSQL: a duplicate is applied once,
a malformed message goes to `<topic>.dlq` with its reason, a failing handler parks its event,
a redelivery after the database committed but the offset did not is applied once, a batch
with one bad event still applies the others, and a rewind after the broker lost its log reads
the events published again below the old positions.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import InconsistentGroupProtocolError

from schemas.envelope import Envelope
from schemas.topics import Topic, dlq_name, topic_name
from services.common.db import DbConnection, create_pool
from services.common.inbox import InboxConsumer, Subscription
from services.common.settings import Settings
from tests.integration.bridge.bridge_harness import BridgeProcess, envelope, invoice_confirmed
from tests.integration.delivery_fixtures import Ping, effects, open_service_pool, record_effect
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

MALFORMED = b'{"not": "an event"}'


class Driver(abc.ABC):
    """One consumer under the contract: how to run it, feed it and see what it did."""

    topic: str  # the full name of the topic it consumes
    group: str  # its consumer group
    assignor: type = RoundRobinPartitionAssignor  # the group's assignment protocol

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop cleanly (offsets of what was applied are committed)."""

    @abc.abstractmethod
    def event(self, n: int, *, fails: bool = False) -> bytes:
        """A new valid event whose effect is `n`; `fails`: one the handler cannot apply."""

    @abc.abstractmethod
    async def applied(self) -> Counter[int]:
        """How many times each effect was applied."""

    @abc.abstractmethod
    async def stats(self) -> dict[str, Any]:
        """The consumer's counters (applied, duplicates, parked, dead_lettered)."""

    @abc.abstractmethod
    async def pool(self) -> asyncpg.Pool:
        """The consumer's database."""

    @abc.abstractmethod
    async def rewind(self) -> list[str]:
        """Have the running consumer read its partitions again from their beginning."""

    async def parked(self) -> list[str]:
        async with (await self.pool()).acquire() as conn:
            rows = await conn.fetch("SELECT reason FROM dwsim_parked_event ORDER BY parked_at")
        return [r["reason"] for r in rows]


class InboxDriver(Driver):
    """The plain `InboxConsumer` on a topic of `Ping` events, on the finance database."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.topic = topic_name(Topic.INVOICE_CONFIRMED, settings.topic_prefix)
        self.group = f"{self.topic}-contract"
        self._pool: asyncpg.Pool | None = None
        self._consumer: InboxConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await open_service_pool(self.settings, "finance")
        return self._pool

    async def start(self) -> None:
        async def handler(conn: DbConnection, event: Envelope[Any]) -> None:
            if event.payload.note == "fail":
                raise RuntimeError("refused by the test handler")
            await record_effect(conn, event)

        subscription = Subscription(self.topic, Ping, handler)
        self._consumer = InboxConsumer(await self.pool(), self.settings, self.group, [subscription])
        self._task = asyncio.create_task(self._consumer.run())

    async def stop(self) -> None:
        if self._consumer is not None and self._task is not None:
            self._consumer.stop()
            await asyncio.wait_for(self._task, 20)
            self._consumer = self._task = None

    async def close(self) -> None:
        await self.stop()
        if self._pool is not None:
            await self._pool.close()

    def event(self, n: int, *, fails: bool = False) -> bytes:
        return envelope("ping", "test", Ping(n=n, note="fail" if fails else ""), f"inv-{n}")

    async def applied(self) -> Counter[int]:
        return Counter(await effects(await self.pool()))

    async def stats(self) -> dict[str, Any]:
        assert self._consumer is not None
        return dict(self._consumer.stats.__dict__)

    async def rewind(self) -> list[str]:
        assert self._consumer is not None
        return await self._consumer.rewind()


class FaustBridgeDriver(Driver):
    """The bridge's faust worker as a process, fed confirmed invoices: the effect of one is
    its proposal header record (one per invoice)."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        super().__init__(settings)
        self.topic = topic_name(Topic.INVOICE_CONFIRMED, settings.topic_prefix)
        self.group = f"{settings.topic_prefix}bridge"
        self.assignor = FaustNamedAssignor
        self.log_dir = log_dir
        self._process: BridgeProcess | None = None
        self._pool: asyncpg.Pool | None = None
        self._invoices: dict[str, int] = {}
        self._starts = 0

    async def start(self) -> None:
        self._starts += 1
        log = self.log_dir / f"bridge-{self._starts}.log"
        self._process = BridgeProcess(self.settings, log).start()
        await self._process.wait_ready()

    async def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None

    async def close(self) -> None:
        await self.stop()
        if self._pool is not None:
            await self._pool.close()

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await create_pool(self.settings.service_database_url("bridge"))
        return self._pool

    def event(self, n: int, *, fails: bool = False) -> bytes:
        # A NUL character cannot be stored in jsonb: the handler fails on the source record.
        name = "Ada\x00Lovelace" if fails else "Adventure Works"
        invoice = invoice_confirmed(invoice_number=f"PINV-{n:04d}", customer_name=name)
        self._invoices[str(invoice.invoice_id)] = n
        return envelope("invoice.confirmed", "dataverse", invoice, str(invoice.invoice_id))

    async def applied(self) -> Counter[int]:
        async with (await self.pool()).acquire() as conn:
            rows = await conn.fetch("SELECT invoice_id FROM bridge_record")
        return Counter(self._invoices[r["invoice_id"]] for r in rows)

    async def stats(self) -> dict[str, Any]:
        assert self._process is not None
        health = await self._process.health()
        assert health is not None and health["consumer"] is not None
        return dict(health["consumer"])

    async def rewind(self) -> list[str]:
        assert self._process is not None
        answer = await self._process.post("/consumer/rewind")
        answer.raise_for_status()
        return list(answer.json()["rewound"])


async def publish(settings: Settings, topic: str, *values: bytes) -> None:
    """Send the values in order on one key (one partition), as one flush."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers(), acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send(topic, value, key=b"contract")
        await producer.flush()
    finally:
        await producer.stop()


async def dead_letters(settings: Settings, topic: str, count: int) -> list[dict[str, Any]]:
    """The first `count` letters on the topic's `.dlq`, read without a group."""
    consumer = AIOKafkaConsumer(
        dlq_name(topic),
        bootstrap_servers=settings.bootstrap_servers(),
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    letters: list[dict[str, Any]] = []
    try:

        async def enough() -> bool:
            for messages in (await consumer.getmany(timeout_ms=100)).values():
                letters.extend(json.loads(m.value) for m in messages)
            return len(letters) >= count

        await wait_for(enough, 30, what=f"{count} letters on {dlq_name(topic)}")
    finally:
        await consumer.stop()
    return letters


class FaustNamedAssignor(RoundRobinPartitionAssignor):
    """Round robin under the name of faust's assignor, to join the bridge workers' group."""

    name = "faust"


async def commit_group_offsets(
    settings: Settings,
    group: str,
    topic: str,
    assignor: type = RoundRobinPartitionAssignor,
    offset: int = 0,
) -> None:
    """Commit `offset` on every partition for the (stopped) group. 0: as if the consumer had
    applied everything and then died before committing a single offset; past the log's end:
    the positions a broker that lost its log leaves behind. The committing
    consumer joins the group for that (the broker refuses commits from outside it), naming
    its assignor as the group's members do (the broker keeps a group's protocol), and tries
    again until the stopped member is gone."""

    async def rewound() -> bool:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=settings.bootstrap_servers(),
            group_id=group,
            enable_auto_commit=False,
            session_timeout_ms=settings.consumer_session_timeout_ms,
            heartbeat_interval_ms=settings.consumer_heartbeat_interval_ms,
            partition_assignment_strategy=(assignor,),
        )
        try:
            await consumer.start()
            end = asyncio.get_running_loop().time() + 10
            while len(consumer.assignment()) < settings.partitions:
                if asyncio.get_running_loop().time() > end:
                    return False
                await consumer.getmany(timeout_ms=100)
            await consumer.commit({tp: offset for tp in consumer.assignment()})
            return True
        except InconsistentGroupProtocolError:
            return False
        finally:
            await consumer.stop()

    await wait_for(rewound, 60, what=f"offsets of {group} set to {offset}")


class DeliveryContract:
    """The cases, written once; each `Test…` subclass provides its `driver` fixture."""

    async def test_duplicate_delivered_twice_is_applied_once(self, driver: Driver) -> None:
        value = driver.event(1)
        await publish(driver.settings, driver.topic, value, value, driver.event(2))
        await wait_for(lambda: _applied(driver, {1, 2}), what="both effects")
        await wait_for(lambda: _stat_at_least(driver, "duplicates", 1), what="the duplicate")
        assert await driver.applied() == Counter({1: 1, 2: 1})

    async def test_malformed_message_goes_to_the_dlq_with_its_reason(self, driver: Driver) -> None:
        await publish(driver.settings, driver.topic, MALFORMED, driver.event(1))
        await wait_for(lambda: _applied(driver, {1}), what="the effect after the bad message")
        [letter] = await dead_letters(driver.settings, driver.topic, 1)
        assert letter["topic"] == driver.topic and letter["reason"], letter
        assert (await driver.stats())["dead_lettered"] == 1

    async def test_handler_failure_parks_the_event_with_its_reason(self, driver: Driver) -> None:
        await publish(driver.settings, driver.topic, driver.event(1, fails=True), driver.event(2))
        await wait_for(lambda: _applied(driver, {2}), what="the effect after the failing one")
        await wait_for(lambda: _stat_at_least(driver, "parked", 1), what="the parked event")
        [reason] = await driver.parked()
        assert reason, "a parked event carries its reason"
        assert 1 not in await driver.applied()

    async def test_redelivery_after_commit_without_offset_commit_is_applied_once(
        self, driver: Driver
    ) -> None:
        await publish(driver.settings, driver.topic, *(driver.event(n) for n in range(5)))
        await wait_for(lambda: _applied(driver, set(range(5))), what="five effects")
        await driver.stop()
        await commit_group_offsets(driver.settings, driver.group, driver.topic, driver.assignor)
        await driver.start()
        await wait_for(lambda: _stat_at_least(driver, "duplicates", 5), 60, what="5 re-reads")
        assert (await driver.stats())["applied"] == 0
        assert await driver.applied() == Counter(range(5))

    async def test_rewind_reads_events_below_positions_of_a_lost_log(self, driver: Driver) -> None:
        # A broker that lost its log (the local broker keeps it in memory) leaves consumers
        # with positions of the old log; the events published again land at small offsets
        # below them, and the local broker does not answer a fetch past the end with
        # OFFSET_OUT_OF_RANGE as Kafka does. The operator's rewind reads them.
        await publish(driver.settings, driver.topic, *(driver.event(n) for n in range(3)))
        await wait_for(lambda: _applied(driver, {0, 1, 2}), what="three effects")
        await driver.stop()
        await commit_group_offsets(
            driver.settings, driver.group, driver.topic, driver.assignor, offset=1_000
        )
        await driver.start()
        await wait_for(lambda: _holds_every_partition(driver), 60, what="the assignment")
        await publish(driver.settings, driver.topic, *(driver.event(n) for n in range(3, 6)))
        rewound = await driver.rewind()
        mine = sorted(r for r in rewound if r.startswith(f"{driver.topic}:"))
        assert mine == [f"{driver.topic}:{p}" for p in range(driver.settings.partitions)]
        await wait_for(lambda: _applied(driver, set(range(6))), 60, what="the events below")
        await wait_for(lambda: _stat_at_least(driver, "duplicates", 3), 60, what="3 re-reads")
        assert await driver.applied() == Counter(range(6))

    async def test_batch_with_one_bad_event_applies_the_others(self, driver: Driver) -> None:
        values = [driver.event(1), MALFORMED, driver.event(2), driver.event(3, fails=True)]
        await publish(driver.settings, driver.topic, *values, driver.event(4))
        await wait_for(lambda: _applied(driver, {1, 2, 4}), what="the good effects")
        await wait_for(lambda: _stat_at_least(driver, "parked", 1), what="the parked event")
        assert await driver.applied() == Counter({1: 1, 2: 1, 4: 1})
        assert len(await dead_letters(driver.settings, driver.topic, 1)) >= 1


async def _applied(driver: Driver, expected: set[int]) -> bool:
    return expected <= set(await driver.applied())


async def _holds_every_partition(driver: Driver) -> bool:
    assigned = (await driver.stats())["assigned"]
    return (
        len([a for a in assigned if a.startswith(f"{driver.topic}:")]) == driver.settings.partitions
    )


async def _stat_at_least(driver: Driver, name: str, n: int) -> bool:
    return int((await driver.stats())[name]) >= n


class TestInboxConsumer(DeliveryContract):
    @pytest.fixture
    async def driver(self, settings: Settings) -> AsyncIterator[Driver]:
        driver = InboxDriver(settings)
        await driver.start()
        try:
            yield driver
        finally:
            await driver.close()


class TestFaustBridgeWorker(DeliveryContract):
    @pytest.fixture
    async def driver(self, settings: Settings, tmp_path: Path) -> AsyncIterator[Driver]:
        driver = FaustBridgeDriver(settings, tmp_path)
        await driver.start()
        try:
            yield driver
        finally:
            with contextlib.suppress(Exception):
                await driver.close()
