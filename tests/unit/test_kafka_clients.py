"""Every Kafka client the project builds carries the security settings (issue 23, item 6).

The local broker has neither TLS nor SASL, so these tests build each client object and read
the configuration it would connect with; no broker is needed and none is contacted. What they
prove is the plumbing from `Settings` to each client, not a handshake with a secured cluster.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import certifi
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import ValidationError

from infra.topics import new_topic
from services.common.kafka import (
    KafkaSecurityError,
    faust_broker_options,
    make_admin,
    make_consumer,
    make_producer,
    make_reader,
)
from services.common.settings import Settings

BOOTSTRAP = "kafka-1:9093,kafka-2:9093"


def secured(protocol: str, mechanism: str = "SCRAM-SHA-512", **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap": BOOTSTRAP,
        "kafka_security_protocol": protocol,
        "kafka_sasl_mechanism": mechanism,
        "kafka_sasl_username": "dwsim-bridge",
        "kafka_sasl_password": "s3cret",
        "kafka_ssl_cafile": Path(certifi.where()),
    }
    return Settings(**{**values, **extra})


async def _connection_of(factory: Callable[[Settings], Any], settings: Settings) -> Any:
    """The connection client inside the built object, where aiokafka keeps the options it
    would connect with. Built in a running loop, as the services build theirs, and closed
    again without ever having connected."""
    built = factory(settings)
    inner = getattr(built, "client", None) or built._client
    await (built.close() if isinstance(built, AIOKafkaAdminClient) else built.stop())
    return inner


def connection_of(factory: Callable[[Settings], Any], settings: Settings) -> Any:
    return asyncio.run(_connection_of(factory, settings))


AIOKAFKA_CLIENTS: dict[str, Callable[[Settings], Any]] = {
    "producer": lambda s: make_producer(s, "relay"),
    "consumer": lambda s: make_consumer(s, "group", "topic"),
    "reader": lambda s: make_reader(s, fetch_max_wait_ms=20),
    "group reader": lambda s: make_reader(s, group_id="dataverse"),
    "admin": make_admin,
}


@pytest.mark.parametrize("kind", sorted(AIOKAFKA_CLIENTS))
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_every_aiokafka_client_is_built_with_sasl_ssl(kind: str, mechanism: str) -> None:
    inner = connection_of(AIOKAFKA_CLIENTS[kind], secured("SASL_SSL", mechanism))
    assert inner._bootstrap_servers == BOOTSTRAP
    assert inner._security_protocol == "SASL_SSL"
    assert inner._sasl_mechanism == mechanism
    assert inner._sasl_plain_username == "dwsim-bridge"
    assert inner._sasl_plain_password == "s3cret"
    assert isinstance(inner._ssl_context, ssl.SSLContext)
    assert inner._ssl_context.verify_mode == ssl.CERT_REQUIRED
    # The configured CA file was loaded, not just the system's.
    assert inner._ssl_context.cert_store_stats()["x509_ca"] > 0


@pytest.mark.parametrize("kind", sorted(AIOKAFKA_CLIENTS))
def test_every_aiokafka_client_is_built_with_sasl_plaintext_and_no_tls(kind: str) -> None:
    settings = secured("SASL_PLAINTEXT", "PLAIN", kafka_ssl_cafile=None)
    inner = connection_of(AIOKAFKA_CLIENTS[kind], settings)
    assert (inner._security_protocol, inner._sasl_mechanism) == ("SASL_PLAINTEXT", "PLAIN")
    assert inner._ssl_context is None


@pytest.mark.parametrize("kind", sorted(AIOKAFKA_CLIENTS))
def test_every_aiokafka_client_is_built_with_ssl_alone(kind: str) -> None:
    settings = Settings(
        kafka_bootstrap=BOOTSTRAP,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=Path(certifi.where()),
    )
    inner = connection_of(AIOKAFKA_CLIENTS[kind], settings)
    assert inner._security_protocol == "SSL"
    assert isinstance(inner._ssl_context, ssl.SSLContext)


@pytest.mark.parametrize("kind", sorted(AIOKAFKA_CLIENTS))
def test_the_default_stays_plaintext_for_the_local_broker(kind: str) -> None:
    inner = connection_of(AIOKAFKA_CLIENTS[kind], Settings(kafka_bootstrap=BOOTSTRAP))
    assert inner._security_protocol == "PLAINTEXT"
    assert inner._ssl_context is None


@pytest.mark.parametrize(
    ("protocol", "mechanism"),
    [("SASL_SSL", "SCRAM-SHA-256"), ("SASL_PLAINTEXT", "SCRAM-SHA-512"), ("SASL_SSL", "PLAIN")],
)
def test_the_bridge_faust_app_gets_the_same_credentials(protocol: str, mechanism: str) -> None:
    settings = secured(protocol, mechanism)
    if protocol == "SASL_PLAINTEXT":
        settings = secured(protocol, mechanism, kafka_ssl_cafile=None)
    options = faust_broker_options(settings)
    assert options["broker"] == ["kafka://kafka-1:9093", "kafka://kafka-2:9093"]
    # What faust's aiokafka driver passes to its own producer and consumer.
    auth = credentials_to_aiokafka_auth(options["broker_credentials"])
    assert auth["security_protocol"] == protocol
    assert auth["sasl_mechanism"] == mechanism
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("dwsim-bridge", "s3cret")
    assert isinstance(auth["ssl_context"], ssl.SSLContext) == (protocol == "SASL_SSL")


def test_the_built_faust_app_carries_the_credentials() -> None:
    from services.bridge.stream_app import BridgeRuntime, build_faust_app

    settings = secured("SASL_SSL", "SCRAM-SHA-256", api_host="127.0.0.1")
    app = build_faust_app(settings, BridgeRuntime(settings))
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials)
    assert (auth["security_protocol"], auth["sasl_mechanism"]) == ("SASL_SSL", "SCRAM-SHA-256")
    assert [str(url) for url in app.conf.broker] == [
        "kafka://kafka-1:9093",
        "kafka://kafka-2:9093",
    ]


def test_faust_app_over_ssl_alone() -> None:
    settings = Settings(
        kafka_bootstrap=BOOTSTRAP,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=Path(certifi.where()),
    )
    auth = credentials_to_aiokafka_auth(faust_broker_options(settings)["broker_credentials"])
    assert auth["security_protocol"] == "SSL"
    assert isinstance(auth["ssl_context"], ssl.SSLContext)


def test_faust_app_plaintext_by_default() -> None:
    assert "broker_credentials" not in faust_broker_options(Settings(kafka_bootstrap=BOOTSTRAP))


def test_sasl_without_credentials_is_refused_naming_the_settings() -> None:
    with pytest.raises(ValidationError, match="DWSIM_KAFKA_SASL_USERNAME"):
        Settings(kafka_bootstrap=BOOTSTRAP, kafka_security_protocol="SASL_SSL")


def test_a_missing_ca_file_is_refused_naming_the_setting(tmp_path: Path) -> None:
    settings = Settings(
        kafka_bootstrap=BOOTSTRAP,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=tmp_path / "absent.pem",
    )
    with pytest.raises(KafkaSecurityError, match="DWSIM_KAFKA_SSL_CAFILE"):
        make_admin(settings)


def test_provisioned_topics_have_the_replication_and_min_insync_replicas() -> None:
    settings = Settings(
        kafka_bootstrap=BOOTSTRAP, topic_replication_factor=3, topic_min_insync_replicas=2
    )
    topic = new_topic(settings, "invoice-confirmed")
    assert topic.replication_factor == 3
    assert topic.topic_configs == {"min.insync.replicas": "2"}


def test_the_local_broker_gets_no_topic_configs() -> None:
    topic = new_topic(Settings(kafka_bootstrap=BOOTSTRAP), "invoice-confirmed")
    assert (topic.replication_factor, topic.topic_configs) == (1, {})


def test_a_child_process_gets_the_security_settings_and_the_password_itself() -> None:
    """The services `dwsim up` starts read their settings from the environment it passes."""
    from services.simulator.processes import settings_environment

    env = settings_environment(secured("SASL_SSL", "SCRAM-SHA-256"))
    assert env["DWSIM_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["DWSIM_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-256"
    assert env["DWSIM_KAFKA_SASL_USERNAME"] == "dwsim-bridge"
    assert env["DWSIM_KAFKA_SASL_PASSWORD"] == "s3cret"  # not pydantic's "**********"
    assert env["DWSIM_KAFKA_SSL_CAFILE"] == certifi.where()
