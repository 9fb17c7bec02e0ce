"""aiokafka producers and consumers configured for dwsim's brokers."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.common.settings import Settings


def make_producer(settings: Settings, client_id: str) -> AIOKafkaProducer:
    """A producer that waits for all replicas; idempotence only where the broker has it."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers(),
        client_id=client_id,
        acks="all",
        enable_idempotence=settings.producer_enable_idempotence,
        linger_ms=2,
        max_batch_size=settings.producer_max_batch_bytes,
        max_request_size=settings.max_message_bytes,
        request_timeout_ms=10_000,
        retry_backoff_ms=200,
    )


def make_consumer(settings: Settings, group_id: str, *topics: str) -> AIOKafkaConsumer:
    """A group consumer that commits offsets itself, after its database transaction."""
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.bootstrap_servers(),
        group_id=group_id,
        client_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.consumer_session_timeout_ms,
        heartbeat_interval_ms=settings.consumer_heartbeat_interval_ms,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        max_poll_records=settings.consumer_max_batch,
        metadata_max_age_ms=5_000,
    )
