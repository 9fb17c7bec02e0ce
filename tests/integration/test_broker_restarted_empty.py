"""A broker restarted empty while dwsim's clients run: provisioning gets every topic back with
its configured partitions, never the broker's default.

The clients still running (a producer, a group consumer) refresh their metadata while the
topics are gone. aiokafka asks with `allow_auto_topic_creation=true` unless told otherwise, and
the local broker then created each topic with 4 partitions; provisioning found them existing,
and the records published to partitions 4 and 5 of the old layout were lost (found by the quick
chaos run: Dataverse's consumer held only partitions 0–3 of dv-actuals-accounting).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from aiokafka.errors import KafkaError

from infra import broker, topics
from schemas.topics import all_topic_names
from services.common.kafka import make_admin, make_consumer, make_producer
from services.common.ports import free_port
from services.common.settings import Settings

pytestmark = pytest.mark.integration


async def _partitions(settings: Settings) -> dict[str, int]:
    admin = make_admin(settings)
    await admin.start()
    try:
        described = await admin.describe_topics(all_topic_names(settings.topic_prefix))
        return {t["topic"]: len(t["partitions"]) for t in described}
    finally:
        await admin.close()


async def test_running_clients_do_not_recreate_topics_with_the_broker_default(
    settings: Settings, tmp_path: Path
) -> None:
    own = settings.model_copy(
        update={"home": tmp_path, "broker_port": free_port(), "kafka_bootstrap": None}
    )
    broker.start(own)
    try:
        await topics.provision_async(own)
        names = all_topic_names(own.topic_prefix)
        consumer = make_consumer(own, f"{own.topic_prefix}restart", *names)
        producer = make_producer(own, "restart")
        await consumer.start()
        await producer.start()
        try:
            broker.stop(own)
            broker.start(own)

            # Both clients keep working against the empty broker for longer than their 5 s
            # metadata refresh, as the services do between the restart and provisioning: this
            # loop is the clients' activity, not a wait for a state.
            end = asyncio.get_running_loop().time() + 8
            while asyncio.get_running_loop().time() < end:
                await consumer.getmany(timeout_ms=100)
                with contextlib.suppress(KafkaError, TimeoutError):
                    await asyncio.wait_for(producer.send(names[0], b"x", key=b"k"), 0.5)
            await topics.provision_async(own)
            partitions = await _partitions(own)
        finally:
            await producer.stop()
            await consumer.stop()
        assert partitions == {name: own.partitions for name in names}
    finally:
        broker.stop(own)
