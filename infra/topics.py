"""Topic provisioning: every topic of DESIGN.md and its `.dlq`, with the configured prefix."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.admin import NewPartitions, NewTopic
from aiokafka.errors import IncompatibleBrokerVersion

from schemas.topics import all_topic_names
from services.common.errors import DwsimError
from services.common.kafka import make_admin, topic_configs
from services.common.settings import Settings


class TopicTooSmall(DwsimError):
    """A topic exists with fewer partitions than configured, and the broker cannot add any."""


_TOPIC_ALREADY_EXISTS = 36


def provision(settings: Settings) -> list[str]:
    """Create the topics that are missing; returns the names created."""
    return asyncio.run(provision_async(settings))


async def provision_async(settings: Settings) -> list[str]:
    """Async form of `provision`, for callers already in an event loop."""
    admin = make_admin(settings)
    await admin.start()
    try:
        names = all_topic_names(settings.topic_prefix)
        existing = set(await admin.list_topics())
        wanted = [n for n in names if n not in existing]
        if wanted:
            response = await admin.create_topics([new_topic(settings, name) for name in wanted])
            for name, code, *_ in getattr(response, "topic_errors", []) or []:
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    raise RuntimeError(f"creating topic {name} failed with Kafka error code {code}")
        await _ensure_partitions(admin, settings, [n for n in names if n in existing])
        return wanted
    finally:
        await admin.close()


async def _ensure_partitions(admin: Any, settings: Settings, names: list[str]) -> None:
    """Topics that exist with fewer partitions than configured get the missing ones (keys
    move, which is why it is loud); a broker without CreatePartitions (the local one) is an
    error naming the topics, never a silent smaller topic."""
    if not names:
        return
    small = {
        t["topic"]: len(t["partitions"])
        for t in await admin.describe_topics(names)
        if t.get("error_code", 0) == 0 and len(t["partitions"]) < settings.partitions
    }
    if not small:
        return
    try:
        await admin.create_partitions({name: NewPartitions(settings.partitions) for name in small})
    except IncompatibleBrokerVersion as exc:
        listed = ", ".join(f"{n} ({count})" for n, count in sorted(small.items()))
        raise TopicTooSmall(
            f"topics with fewer than {settings.partitions} partitions: {listed}; the broker "
            f"cannot add partitions ({exc}). Delete them, or restart the local broker, and "
            f"provision again"
        ) from exc


def new_topic(settings: Settings, name: str) -> NewTopic:
    """A topic as provisioned: the configured partitions, replicas and topic configs."""
    return NewTopic(
        name,
        settings.partitions,
        settings.topic_replication_factor,
        topic_configs=topic_configs(settings),
    )


async def list_topics(settings: Settings) -> list[str]:
    """Topic names on the broker."""
    admin = make_admin(settings)
    await admin.start()
    try:
        return sorted(await admin.list_topics())
    finally:
        await admin.close()
