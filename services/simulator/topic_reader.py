"""Reading a topic straight from the broker, as an independent checker does: the whole topic to
its high-water mark, or until an event with a given key arrives.

Each read has its own consumer without a group (it assigns every partition itself), so it never
takes partitions from the services' consumer groups nor commits an offset.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from services.common.kafka import make_reader
from services.common.settings import Settings
from services.simulator.deadlines import DeadlinePassed

Record: TypeAlias = "ConsumerRecord[bytes, bytes]"


@asynccontextmanager
async def _assigned(
    settings: Settings, topic: str
) -> AsyncIterator[tuple[AIOKafkaConsumer, list[TopicPartition]]]:
    """A group-less consumer holding every partition of `topic`, at its beginning."""
    consumer = make_reader(settings, fetch_max_wait_ms=20)
    await consumer.start()
    try:
        await consumer.topics()  # loads the metadata that partitions_for_topic reads
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            raise DeadlinePassed(f"topic {topic} does not exist")
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        yield consumer, partitions
    finally:
        await consumer.stop()


async def read_to_end(settings: Settings, topic: str, deadline_s: float = 15) -> list[Record]:
    """Every record a topic holds, read from its beginning up to each partition's high-water
    mark as fetch responses carry it (ListOffsets under-reports on the default broker,
    DESIGN.md)."""
    async with _assigned(settings, topic) as (consumer, partitions):
        held: list[Record] = []
        end = time.monotonic() + deadline_s
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            held += [record for records in batch.values() for record in records]
            marks = [consumer.highwater(p) for p in partitions]
            positions = [await consumer.position(p) for p in partitions]
            if all(m is not None and pos >= m for m, pos in zip(marks, positions, strict=True)):
                return held
            if time.monotonic() > end:
                raise DeadlinePassed(f"could not read {topic} to its high-water mark")


async def read_values(
    settings: Settings, topic: str, n: int, deadline_s: float = 30
) -> list[bytes]:
    """The first `n` values of a topic, waiting for them until the deadline."""
    values: list[bytes] = []
    async with _assigned(settings, topic) as (consumer, _):
        end = time.monotonic() + deadline_s
        while len(values) < n and time.monotonic() < end:
            batch = await consumer.getmany(timeout_ms=200)
            values += [m.value for ms in batch.values() for m in ms if m.value]
    if len(values) < n:
        raise DeadlinePassed(f"expected {n} records on {topic}, found {len(values)}")
    return values


async def wait_for_event(
    settings: Settings,
    topic: str,
    key: str,
    deadline_s: float = 60,
    where: Callable[[dict[str, Any]], bool] | None = None,
) -> dict[str, Any]:
    """The first event on `topic` (full name) with this key (and, with `where`, matching it),
    read from the topic's beginning; waits for it until the deadline.

    Returns the decoded event: the envelope (`event_id`, `event_type`, `occurred_at`,
    `source`, `payload`) as the producer wrote it.
    """
    wanted = key.encode()
    async with _assigned(settings, topic) as (consumer, _):
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            batch = await consumer.getmany(timeout_ms=200)
            for record in (r for records in batch.values() for r in records):
                if record.key != wanted or record.value is None:
                    continue
                try:
                    event = json.loads(record.value)
                except ValueError:
                    continue
                if isinstance(event, dict) and (where is None or where(event)):
                    return event
    raise DeadlinePassed(f"timed out after {deadline_s:.0f} s waiting for key {key} on {topic}")
