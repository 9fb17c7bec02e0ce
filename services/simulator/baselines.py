"""Raw broker and database figures, measured in the same run as the pipeline they compare to."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer

from infra.topics import new_topic
from services.common.kafka import make_admin, make_consumer, make_producer
from services.common.settings import Settings

# About the size of one mapped actual (the unit the pipeline figure counts). dwsim's messages
# now carry runs of them, so this is the conservative base: small messages give the raw broker
# its highest rate, and the ratio compares actuals per second with messages per second.
EVENT_BYTES = 900


@dataclass(frozen=True)
class BrokerBaseline:
    """Raw aiokafka on the same broker, with dwsim's producer and consumer settings."""

    messages: int
    produce_consume_msgs_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    # Every repetition's rate; the figure above is their median.
    produce_consume_msgs_per_s_each: tuple[float, ...] = ()


def percentile(values: list[float], p: float) -> float:
    """The p-quantile (0..1) of the values, interpolated linearly between the two nearest
    ranks: the median of an even count is the mean of its two middle values (0.0 for none)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = p * (len(ordered) - 1)
    below = int(rank)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (rank - below)


def slope_per_step(values: list[float]) -> float:
    """Least-squares change per step of values taken at equal steps (0.0 for fewer than two).

    Fitted over every value, not last minus first: one reading taken just before a garbage
    collection would otherwise decide the answer.
    """
    n = len(values)
    if n < 2:
        return 0.0
    mean_x = (n - 1) / 2
    mean_y = sum(values) / n
    spread = sum((x - mean_x) ** 2 for x in range(n))
    return sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values)) / spread


async def _topic(settings: Settings) -> str:
    name = f"{settings.topic_prefix}raw-{uuid.uuid4().hex[:8]}"
    admin = make_admin(settings)
    await admin.start()
    try:
        await admin.create_topics([new_topic(settings, name)])
    finally:
        await admin.close()
    return name


async def _drain(consumer: AIOKafkaConsumer, n: int, deadline_s: float) -> int:
    """Consume `n` messages; a drain that misses its deadline yields no rate, it fails."""
    got = 0
    end = time.monotonic() + deadline_s
    while got < n:
        if time.monotonic() >= end:
            raise TimeoutError(f"raw broker: {got} of {n} messages consumed in {deadline_s} s")
        batch = await consumer.getmany(timeout_ms=100)
        got += sum(len(v) for v in batch.values())
    return got


async def measure_broker(
    settings: Settings, messages: int = 20_000, pings: int = 200, repeats: int = 5
) -> BrokerBaseline:
    """Throughput of produce → consume of `messages` events, `repeats` times (the median is
    the figure), then one-at-a-time latency.

    One transfer of 20,000 events takes under half a second here, and single runs of it gave
    44,081 to 69,005 msgs/s within one hour: the denominator of every ratio must not move more
    than the pipeline does.
    """
    topic = await _topic(settings)
    payload = os.urandom(EVENT_BYTES // 2).hex().encode()
    producer = make_producer(settings, "bench-raw")
    consumer = make_consumer(settings, f"bench-raw-{uuid.uuid4().hex[:6]}", topic)
    await producer.start()
    await consumer.start()
    try:
        # Wait for the group to settle so the join is not counted as transfer time.
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        rates = []
        got = 0
        for _ in range(repeats):
            started = time.monotonic()
            sends = [
                await producer.send(topic, payload, key=str(i % 64).encode())
                for i in range(messages)
            ]
            await asyncio.gather(*sends)
            got = await _drain(consumer, messages, 120)
            rates.append(got / (time.monotonic() - started))
        latencies = []
        for i in range(pings):
            t0 = time.monotonic()
            await producer.send_and_wait(topic, payload, key=str(i).encode())
            await _drain(consumer, 1, 10)
            latencies.append((time.monotonic() - t0) * 1000)
        return BrokerBaseline(
            messages=got,
            produce_consume_msgs_per_s=percentile(rates, 0.5),
            latency_p50_ms=percentile(latencies, 0.5),
            latency_p99_ms=percentile(latencies, 0.99),
            produce_consume_msgs_per_s_each=tuple(rates),
        )
    finally:
        await consumer.stop()
        await producer.stop()


async def measure_database(settings: Settings, rows: int = 2_000) -> dict[str, Any]:
    """Single-row durable commits per second on one connection, in the bridge's database.

    A regular table, committed as the services commit (the server's `synchronous_commit` and
    `fsync`, which the result records): every commit waits for its WAL to be flushed. A TEMP
    table writes no WAL and measured an in-memory insert, not a commit.
    """
    conn = await asyncpg.connect(settings.service_database_url("bridge"))
    table = f"bench_raw_commit_{uuid.uuid4().hex[:8]}"
    try:
        await conn.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, payload text)")
        started = time.monotonic()
        for i in range(rows):
            await conn.execute(f"INSERT INTO {table} (payload) VALUES ($1)", str(i))
        elapsed = time.monotonic() - started
        return {
            "commits_per_s": rows / elapsed,
            "rows": rows,
            "synchronous_commit": await conn.fetchval("SHOW synchronous_commit"),
            "fsync": await conn.fetchval("SHOW fsync"),
        }
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()
