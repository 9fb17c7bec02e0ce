"""Typed settings of every dwsim process, from `DWSIM_*` environment variables.

Defaults point at the local infrastructure that `make up` (or the test session) starts: the
broker's and PostgreSQL's ports, the generated passwords and the roles' generated bearer tokens
are read from the state files that `infra/` writes under `DWSIM_HOME` (default `.dwsim/` in the
project folder of a clone, the user's data folder when dwsim is an installed package).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import platformdirs
from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROJECT_NAME = "dwsim"
SERVICES: tuple[str, ...] = ("dataverse", "finance", "bridge")

BROKER_STATE = "broker.json"
POSTGRES_STATE = "postgres.json"
SECRETS_FILE = "secrets.json"
TOKENS_FILE = "tokens.json"

# The roles that call the HTTP APIs, each with its bearer token (services/common/auth.py).
ROLES: tuple[str, ...] = ("project_manager", "accountant", "receivables_clerk", "administrator")


class InfrastructureNotStarted(RuntimeError):
    """The local broker or database is needed but was neither started nor configured."""


class TokensNotGenerated(InfrastructureNotStarted):
    """A role has no bearer token: none configured, and this home's were never generated."""


def is_clone(root: Path = PROJECT_ROOT) -> bool:
    """Whether the package runs from a checkout of dwsim (its `pyproject.toml` beside the
    packages) rather than from an installed copy in site-packages, which has none."""
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        return False
    # Installed into another project's tree, a pyproject.toml beside site-packages' parent
    # would be that project's: only ours makes this a clone.
    return f'name = "{PROJECT_NAME}"' in pyproject.read_text(encoding="utf-8", errors="replace")


def default_home(root: Path = PROJECT_ROOT) -> Path:
    """`DWSIM_HOME` when unset: `.dwsim/` in a clone (as always), else the user's data folder,
    so that an installed dwsim never writes into site-packages."""
    if is_clone(root):
        return root / ".dwsim"
    return platformdirs.user_data_path(PROJECT_NAME, appauthor=False)


def results_folder(kind: str, home: Path, root: Path = PROJECT_ROOT) -> Path:
    """Where `dwsim bench` or `dwsim chaos` (`kind`) writes its figures: `<kind>/results/` of
    the clone, as before; installed, under the home, beside the rest of dwsim's state."""
    return (root if is_clone(root) else home) / kind / "results"


def _token_field(role: str) -> Any:
    """A role's configured token: `DWSIM_TOKEN_<ROLE>` (or `token_<role>=` in code)."""
    return Field(
        default=None,
        validation_alias=AliasChoices(f"token_{role}", f"dwsim_token_{role}"),
        serialization_alias=f"token_{role}",
        description=(
            f"Bearer token of the {role.replace('_', ' ')}; unset means the one generated for "
            f"this home in {TOKENS_FILE}."
        ),
    )


def parse_instances(text: str) -> dict[str, int]:
    """`bridge=2,finance=2` as {"bridge": 2, "finance": 2}; raises ValueError naming what is
    wrong (an unknown service, a count below 1)."""
    counts: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        service, _, count = part.partition("=")
        service = service.strip()
        if service not in SERVICES:
            raise ValueError(
                f"DWSIM_INSTANCES: {service!r} is no service (one of {', '.join(SERVICES)})"
            )
        try:
            n = int(count)
        except ValueError:
            raise ValueError(f"DWSIM_INSTANCES: {part!r} is not <service>=<count>") from None
        if n < 1:
            raise ValueError(f"DWSIM_INSTANCES: {service} needs at least one instance, not {n}")
        counts[service] = n
    return counts


class Settings(BaseSettings):
    """Every setting with its default; each can be set as `DWSIM_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="DWSIM_", extra="ignore")

    home: Path = Field(
        default_factory=default_home,
        description="Folder of the local infrastructure: data, logs, ports and passwords "
        "(installed as a package rather than cloned: the user's data folder).",
    )
    kafka_bootstrap: str | None = Field(
        default=None,
        description="External Kafka bootstrap servers; unset means the local broker.",
    )
    database_url: str | None = Field(
        default=None,
        description="External PostgreSQL admin URL; unset means the local embedded server.",
    )
    # A secured cluster: every client the project builds (services/common/kafka.py) uses these.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="How the Kafka clients talk to the brokers; the local broker has no TLS "
        "or SASL.",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="PLAIN",
        description="SASL mechanism, used when the security protocol is SASL_*.",
    )
    kafka_sasl_username: str | None = Field(
        default=None, description="SASL user name; required with a SASL_* security protocol."
    )
    kafka_sasl_password: SecretStr | None = Field(
        default=None, description="SASL password; required with a SASL_* security protocol."
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None,
        description="CA certificates (PEM) that sign the brokers' certificates, with SSL or "
        "SASL_SSL; unset means the system's.",
    )
    topic_replication_factor: int = Field(
        default=1, ge=1, description="Replicas of each provisioned topic (3 on a real cluster)."
    )
    topic_min_insync_replicas: int | None = Field(
        default=None,
        ge=1,
        description="`min.insync.replicas` of each provisioned topic; unset means the "
        "broker's default.",
    )
    topic_prefix: str = Field(default="", description="Prefix of every topic name.")
    database_prefix: str = Field(
        default="",
        pattern=r"^([a-z_][a-z0-9_]*)?$",
        description="Prefix of each service's database and role (lower case, digits, _).",
    )
    partitions: int = Field(default=6, ge=1, description="Partitions per provisioned topic.")
    broker_port: int = Field(default=0, ge=0, description="Local broker port; 0 picks a free one.")
    postgres_port: int = Field(default=0, ge=0, description="Local PostgreSQL port; 0 = free one.")

    # The default broker holds each JoinGroup for half the session timeout, so short values
    # keep joins short locally; a real cluster wants the usual longer ones. A worker restarted
    # after a SIGKILL joins ~2 s after it starts, plus the hold: if its predecessor's session
    # has not expired by then, it joins behind the dead leader and waits out that session and a
    # second join. At 4 s that was the usual case (9.9-10.0 s to processing again, against the
    # bridge's 10 s promise); at 3 s the predecessor is gone first (3.8-3.9 s, every round).
    consumer_session_timeout_ms: int = Field(
        default=3000,
        ge=1000,
        description="Consumer group session timeout; a real cluster wants a longer one.",
    )
    consumer_heartbeat_interval_ms: int = Field(
        default=1000, ge=100, description="Consumer group heartbeat interval."
    )
    # The default broker does not answer a waiting fetch early: aiokafka's 500 ms default
    # puts ~240 ms on every hop, and 0 hangs on it. Every consumer asks again after each empty
    # wait, which costs CPU in it and in the broker: against 20 ms, 100 ms halved the idle
    # stack's CPU and cut the broker's under load by ~40 % (billed actuals/s, CPU-bound on 2
    # cores, rose in most alternating runs), for up to 80 ms more per hop when idle. A real
    # cluster answers as soon as data arrives, so there the wait costs nothing.
    fetch_max_wait_ms: int = Field(
        default=100,
        ge=1,
        description="Longest a consumer's fetch waits for data (each idle hop may wait this).",
    )
    consumer_max_batch: int = Field(
        default=500, ge=1, description="Events a consumer applies in one transaction."
    )
    consumer_max_batch_bytes: int = Field(
        default=512 * 1024,
        ge=1,
        description="Bridge: message bytes applied in one transaction (a message may carry "
        "500 actuals).",
    )
    producer_enable_idempotence: bool = Field(
        default=False,
        description="Idempotent producers; the local broker has none, so only for brokers that do.",
    )
    # aiokafka keeps one produce request in flight per partition, and one invoice's events
    # share a partition: with its 16 KiB default a request carried ~18 events, one broker
    # round trip per 18, and one invoice's staging rows crossed at ~1,000 a second.
    producer_max_batch_bytes: int = Field(
        default=512 * 1024, ge=16 * 1024, description="Bytes per partition per produce request."
    )
    # aiokafka's own max_request_size default, and Apache Kafka's default message.max.bytes
    # within a few bytes. The local broker accepted a 6 MB message, so nothing but this limit
    # keeps a message the other clients cannot handle off the topics.
    max_message_bytes: int = Field(
        default=1024 * 1024,
        ge=64 * 1024,
        description=(
            "Largest message any producer sends (relays and dead letters); an outbox row "
            "above it is refused, a consumed message above it is dead-lettered."
        ),
    )
    relay_batch_size: int = Field(default=500, ge=1, description="Outbox rows per publish.")
    relay_idle_interval_s: float = Field(default=0.05, gt=0, description="Relay poll when idle.")
    relay_max_backoff_s: float = Field(default=5.0, gt=0, description="Broker-outage backoff cap.")
    # Every relay, consumer, bridge agent and periodic worker retries while PostgreSQL is
    # unreachable, forever, backing off up to this; the cap bounds how long work waits after
    # the database is back (half of it to all of it), against one connection attempt per
    # worker per interval while it is down.
    database_retry_max_backoff_s: float = Field(
        default=2.0,
        ge=0.1,
        description="Cap of the backoff (with jitter) between retries while the database is "
        "unreachable.",
    )

    api_host: str = Field(default="127.0.0.1", description="Address the HTTP APIs bind.")
    dataverse_port: int = Field(default=0, ge=0, description="Dataverse API port; 0 = free one.")
    finance_port: int = Field(default=0, ge=0, description="Finance API port; 0 = free one.")
    bridge_port: int = Field(default=0, ge=0, description="Bridge admin API port; 0 = free one.")
    instances: str = Field(
        default="",
        description="How many processes of each service `dwsim up` runs against the same "
        "database and topics, as `bridge=2,finance=2,dataverse=2`; a service left out runs "
        "one. The first keeps the service's own port and log; the others take a free port and "
        "log to `<service>-<n>.log`.",
    )
    # The console acts for whoever logs in, the administrator included: local by default.
    console_host: str = Field(
        default="127.0.0.1",
        description="Address the web console binds; keep it local unless others must reach it.",
    )
    console_port: int = Field(default=0, ge=0, description="Web console port; 0 = free one.")
    console_refresh_s: float = Field(
        default=2.0, gt=0, description="Console: how often the live overview refreshes itself."
    )

    # Bearer tokens of the roles, as configured. Anyone on the machine could act as any role
    # with a constant default, so there is none: unset, a role's token is the one generated
    # once per home (`infra/tokens.py`, mode 0600) and read through `token_<role>` below.
    configured_token_project_manager: str | None = _token_field("project_manager")
    configured_token_accountant: str | None = _token_field("accountant")
    configured_token_receivables_clerk: str | None = _token_field("receivables_clerk")
    configured_token_administrator: str | None = _token_field("administrator")
    # The generated tokens read, by home: a service compares them on every request. Only
    # tokens found are kept, so settings made before `up` generated them find them later.
    _generated_tokens: dict[Path, dict[str, str]] = PrivateAttr(default_factory=dict)

    import_interval_s: float = Field(
        default=2.0, gt=0, description="Finance: period of the import from staging."
    )
    journal_max_lines: int = Field(default=200, ge=1, description="Finance: lines per journal.")
    journal_period_unit: Literal["day", "week", "month"] = Field(
        default="month",
        description="Finance: import from staging groups journal lines by this accounting period.",
    )
    receipt_timeout_s: float = Field(
        default=30.0, gt=0, description="Bridge: re-send a pending record after this long."
    )
    queue_max_age_s: float = Field(
        default=86_400.0, gt=0, description="Bridge: oldest record a paused map may hold."
    )
    queue_max_bytes: int = Field(
        default=1 << 30, gt=0, description="Bridge: bytes a paused map may hold."
    )
    platform_limits: Literal["none", "microsoft"] = Field(
        default="none",
        description=(
            "Bridge: 'microsoft' fails a source transaction past dual-write's live-sync limits "
            "(1,000 records, 2 minutes, 250 legal entities) into the error queue; 'none' "
            "syncs it and counts it as one that would fail in production."
        ),
    )

    # Bounded storage (services/common/retention.py). An inbox id must outlive every possible
    # redelivery of its event; see docs/architecture.md, "Bounded storage", for what bounds it.
    retention_s: float = Field(
        default=86_400.0,
        gt=0,
        description="Published outbox rows, the bridge's activity log and synced records' "
        "payloads are pruned after this long; also the longest outbox replay an operator can "
        "ask for.",
    )
    inbox_retention_s: float = Field(
        default=7 * 86_400.0,
        gt=0,
        description="Ids of applied events are pruned after this long: keep it above "
        "`retention_s` and the broker's log retention (Kafka's default: 7 days).",
    )
    retention_interval_s: float = Field(
        default=60.0, gt=0, description="How often each service prunes what is past retention."
    )
    retention_batch_rows: int = Field(
        default=500, ge=1, description="Rows pruned per statement (each its own transaction)."
    )
    retention_pause_s: float = Field(
        default=0.05,
        ge=0,
        description="Pause between two pruning statements, so pruning never crowds the flow.",
    )

    log_level: str = Field(
        default="INFO", description="Lowest level the services log (DEBUG, INFO, WARNING, ...)."
    )
    log_format: Literal["console", "json"] = Field(
        default="console", description="Log lines for people (console) or for machines (json)."
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        description=(
            "OTLP/HTTP endpoint the services export their trace spans to (needs the `otel` "
            "extra); the standard OTEL_EXPORTER_OTLP_* variables turn it on too. Unset: no "
            "exporter runs."
        ),
    )
    faust_loglevel: str = Field(
        default="WARNING",
        description="Bridge: log level of faust and the Kafka client inside the bridge worker.",
    )
    dataverse_database_url: str | None = Field(
        default=None, description="Dataverse's own database URL; unset means derived."
    )
    finance_database_url: str | None = Field(
        default=None, description="Finance's own database URL; unset means derived."
    )
    bridge_database_url: str | None = Field(
        default=None, description="The bridge's own database URL; unset means derived."
    )

    def instance_counts(self) -> dict[str, int]:
        """Processes of each service `dwsim up` runs (`instances`), every service named."""
        return {service: 1 for service in SERVICES} | parse_instances(self.instances)

    @model_validator(mode="after")
    def _check_security_and_retention(self) -> Settings:
        """Refuse at the start, naming the setting, what no client could connect with or what
        would forget an event id before the event can come again."""
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"DWSIM_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "DWSIM_KAFKA_SASL_USERNAME and DWSIM_KAFKA_SASL_PASSWORD"
            )
        parse_instances(self.instances)  # a typo is named at the start, not at `dwsim up`
        if self.inbox_retention_s < self.retention_s:
            raise ValueError(
                "DWSIM_INBOX_RETENTION_S must be at least DWSIM_RETENTION_S: an outbox row can "
                "be replayed while it is kept, so its consumers must remember it as long"
            )
        return self

    def state_file(self, name: str) -> Path:
        """Path of one of the local infrastructure's state files."""
        return self.home / name

    def read_state(self, name: str) -> dict[str, Any] | None:
        """A local infrastructure state file, or None when it does not exist."""
        path = self.state_file(name)
        if not path.exists():
            return None
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def role_token(self, role: str) -> str:
        """A role's bearer token: the configured one, else the one generated for this home."""
        configured: str | None = getattr(self, f"configured_token_{role}")
        if configured:
            return configured
        path = self.state_file(TOKENS_FILE)
        generated = self._generated_tokens.get(path)
        if generated is None:
            data = self.read_state(TOKENS_FILE)
            generated = {str(k): str(v) for k, v in (data or {}).items()}
            if role in generated:
                self._generated_tokens[path] = generated
        if role not in generated:
            raise TokensNotGenerated(
                f"no bearer token of role {role}: {path} has none and DWSIM_TOKEN_{role.upper()} "
                "is not set; `dwsim up` (or `make up`) generates this home's tokens"
            )
        return generated[role]

    def role_tokens(self) -> dict[str, str]:
        """Every role's token; raises TokensNotGenerated naming the file when one has none."""
        return {role: self.role_token(role) for role in ROLES}

    @property
    def token_project_manager(self) -> str:
        """The project manager's bearer token."""
        return self.role_token("project_manager")

    @property
    def token_accountant(self) -> str:
        """The project accountant's bearer token."""
        return self.role_token("accountant")

    @property
    def token_receivables_clerk(self) -> str:
        """The receivables clerk's bearer token."""
        return self.role_token("receivables_clerk")

    @property
    def token_administrator(self) -> str:
        """The administrator's bearer token."""
        return self.role_token("administrator")

    def bootstrap_servers(self) -> str:
        """Kafka bootstrap servers: the configured ones, else the local broker's."""
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        state = self.read_state(BROKER_STATE)
        if state is None:
            raise InfrastructureNotStarted(
                f"no broker: run `make up` (nothing recorded in {self.state_file(BROKER_STATE)}) "
                "or set DWSIM_KAFKA_BOOTSTRAP"
            )
        return f"127.0.0.1:{state['port']}"

    def secrets(self) -> dict[str, str]:
        """Generated passwords of the service roles (and the local superuser)."""
        data = self.read_state(SECRETS_FILE)
        if data is None:
            raise InfrastructureNotStarted(
                f"no database passwords in {self.state_file(SECRETS_FILE)}: run `make up`"
            )
        return {str(k): str(v) for k, v in data.items()}

    def admin_database_url(self) -> str:
        """URL of a role allowed to create roles and databases."""
        if self.database_url:
            return self.database_url
        state = self.read_state(POSTGRES_STATE)
        if state is None:
            raise InfrastructureNotStarted("no PostgreSQL: run `make up` or set DWSIM_DATABASE_URL")
        password = quote(self.secrets()["postgres"], safe="")
        return f"postgresql://postgres:{password}@127.0.0.1:{state['port']}/postgres"

    def service_database(self, service: str) -> str:
        """Name of a service's database, which is also the name of its login role."""
        return f"{self.database_prefix}{service}"

    def service_database_url(self, service: str) -> str:
        """URL of a service's own database, logged in as the service's own role."""
        override: str | None = getattr(self, f"{service}_database_url", None)
        if override:
            return override
        admin = urlsplit(self.admin_database_url())
        password = quote(self.secrets()[service], safe="")
        host = admin.hostname or "127.0.0.1"
        name = self.service_database(service)
        netloc = f"{name}:{password}@{host}:{admin.port or 5432}"
        return urlunsplit((admin.scheme, netloc, f"/{name}", admin.query, ""))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()
