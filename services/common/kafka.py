"""Every Kafka client dwsim builds, configured for dwsim's brokers, secured or not.

`client_options` is the one place that turns the settings into connection options (bootstrap
servers, security protocol, SASL credentials, TLS context); the producer and consumer below,
the admin client (infra/topics.py, the bench), the simulator's readers and the bridge's faust
app (`faust_broker_options`) all take theirs from it, so a secured cluster needs the settings
and nothing else.

dwsim's clients never create a topic by asking about it (`_never_auto_create_topics`): only
provisioning does, with the configured partitions.
"""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol import metadata

from services.common.errors import DwsimError
from services.common.settings import Settings


def _never_auto_create_topics() -> None:
    """Make aiokafka's metadata requests say `allow_auto_topic_creation=false` (it says true).

    A broker that lost its log (the local broker keeps it in memory) has no topics until they
    are provisioned again; a metadata request of a client still running (a producer, a
    consumer, the bridge's faust worker) in that window created every topic it named with the
    broker's default partitions (4 on the local broker, 1 on Apache Kafka's default), and
    provisioning then found them existing. Measured: a consumer left assigned partitions 4
    and 5 that no longer existed, and the records published to them were lost. Applies to
    every aiokafka client of the process, faust's included; there is no client option for it.
    """
    request = metadata.MetadataRequest
    if getattr(request.__init__, "_dwsim_never_auto_create", False):
        return
    original = request.__init__

    def init(
        self: metadata.MetadataRequest,
        topics: list[str] | None = None,
        allow_auto_topic_creation: bool | None = None,
    ) -> None:
        original(self, topics, bool(allow_auto_topic_creation))

    init._dwsim_never_auto_create = True  # type: ignore[attr-defined]
    request.__init__ = init  # type: ignore[method-assign]


_never_auto_create_topics()


class KafkaSecurityError(DwsimError):
    """The security settings cannot make a client (a CA file that does not exist, say)."""


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of SSL and SASL_SSL: the system's CAs, or the configured CA file."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    cafile = settings.kafka_ssl_cafile
    if cafile is not None and not cafile.is_file():
        raise KafkaSecurityError(f"DWSIM_KAFKA_SSL_CAFILE: no such file {cafile}")
    context: ssl.SSLContext = create_ssl_context(cafile=str(cafile) if cafile is not None else None)
    return context


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection options every aiokafka client (producer, consumer, admin) is built with."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers(),
        "security_protocol": settings.kafka_security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    return options


def make_producer(settings: Settings, client_id: str) -> AIOKafkaProducer:
    """A producer that waits for all replicas; idempotence only where the broker has it."""
    return AIOKafkaProducer(
        **client_options(settings),
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
        **client_options(settings),
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


def make_reader(
    settings: Settings, group_id: str | None = None, **options: Any
) -> AIOKafkaConsumer:
    """A consumer that commits nothing: the simulator's readers of topics and of a group's
    committed offsets. `options` are aiokafka's (fetch_max_wait_ms, say)."""
    return AIOKafkaConsumer(
        **client_options(settings), group_id=group_id, enable_auto_commit=False, **options
    )


def make_admin(settings: Settings) -> AIOKafkaAdminClient:
    """The admin client that provisions topics."""
    return AIOKafkaAdminClient(**client_options(settings))


def topic_configs(settings: Settings) -> dict[str, str]:
    """Per-topic configuration of provisioned topics; empty means the broker's defaults (the
    local broker is sent nothing it might not know)."""
    if settings.topic_min_insync_replicas is None:
        return {}
    return {"min.insync.replicas": str(settings.topic_min_insync_replicas)}


def faust_broker_options(settings: Settings) -> dict[str, Any]:
    """The faust app's broker options: the same servers, protocol and credentials (faust
    hands them to its aiokafka clients: `credentials_to_aiokafka_auth`)."""
    from faust.auth import SASLCredentials, SSLCredentials  # the bridge's; others never load it

    servers = [s.strip() for s in settings.bootstrap_servers().split(",") if s.strip()]
    options: dict[str, Any] = {"broker": [f"kafka://{s}" for s in servers]}
    protocol = settings.kafka_security_protocol
    if protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        # With a TLS context faust's credentials say SASL_SSL, without one SASL_PLAINTEXT.
        options["broker_credentials"] = SASLCredentials(
            username=settings.kafka_sasl_username,
            password=password.get_secret_value() if password else None,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=ssl_context(settings),
        )
    elif protocol == "SSL":
        options["broker_credentials"] = SSLCredentials(ssl_context(settings))
    return options
