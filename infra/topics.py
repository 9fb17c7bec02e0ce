"""Topic provisioning: every topic of DESIGN.md and its `.dlq`, with the configured prefix."""

from __future__ import annotations

import asyncio

from aiokafka.admin import NewTopic

from schemas.topics import all_topic_names
from services.common.kafka import make_admin, topic_configs
from services.common.settings import Settings

_TOPIC_ALREADY_EXISTS = 36


def provision(settings: Settings) -> list[str]:
    """Create the topics that are missing; returns the names created."""
    return asyncio.run(provision_async(settings))


async def provision_async(settings: Settings) -> list[str]:
    """Async form of `provision`, for callers already in an event loop."""
    admin = make_admin(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [n for n in all_topic_names(settings.topic_prefix) if n not in existing]
        if not wanted:
            return []
        response = await admin.create_topics([new_topic(settings, name) for name in wanted])
        for name, code, *_ in getattr(response, "topic_errors", []) or []:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"creating topic {name} failed with Kafka error code {code}")
        return wanted
    finally:
        await admin.close()


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
