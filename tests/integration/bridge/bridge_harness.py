"""Drive the bridge as Dataverse and Finance would, through the topics, with plain clients.

- `BridgeProcess` runs `python -m services.bridge` as a subprocess with the test's settings;
- `publish` puts source events on a topic with a plain producer;
- `TopicReader` reads a topic from the beginning without a consumer group, to a condition or
  to the high-water mark of every partition;
- `FakeTarget` plays Finance or Dataverse: it reads the bridge's target topics and answers every
  delivery on `sync-receipts` (applied, or rejected with the reason its policy gives); if it
  crashes, the test fails with its error.
The checks in the tests rebuild the truth from what travelled on the topics, not from the
bridge's own report alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import BaseModel

from infra.processes import free_port
from schemas.dataverse_events import ActualCreated, ActualsCreated, InvoiceConfirmed
from schemas.envelope import Envelope
from schemas.finance_events import ActualAccounting, InvoicePosted
from schemas.receipts import ReceiptOutcome, SyncReceipt, SyncReceipts
from schemas.topics import Topic, topic_name
from schemas.vocabulary import BillingType, TransactionClass, TransactionType
from services.common.settings import PROJECT_ROOT, Settings
from tests.waiting import wait_for

PYTHON = str(PROJECT_ROOT / ".venv" / "bin" / "python")
ROLES = ("project_manager", "accountant", "receivables_clerk", "administrator")


# --------------------------------------------------------------------------------------------
# The bridge process


class BridgeProcess:
    """One bridge worker process with its own admin port (or, with `service`, another of the
    services: `python -m services.<service>` with its own API port)."""

    def __init__(
        self, settings: Settings, log_path: Path, service: str = "bridge", **env: str
    ) -> None:
        self.settings = settings
        self.service = service
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {
            **os.environ,
            "DWSIM_HOME": str(settings.home),
            "DWSIM_TOPIC_PREFIX": settings.topic_prefix,
            "DWSIM_KAFKA_BOOTSTRAP": settings.bootstrap_servers(),
            f"DWSIM_{service.upper()}_PORT": str(self.port),
            "DWSIM_PARTITIONS": str(settings.partitions),
            "DWSIM_RECEIPT_TIMEOUT_S": str(settings.receipt_timeout_s),
            "DWSIM_QUEUE_MAX_AGE_S": str(settings.queue_max_age_s),
            "DWSIM_QUEUE_MAX_BYTES": str(settings.queue_max_bytes),
            "DWSIM_CONSUMER_SESSION_TIMEOUT_MS": str(settings.consumer_session_timeout_ms),
            "DWSIM_CONSUMER_HEARTBEAT_INTERVAL_MS": str(settings.consumer_heartbeat_interval_ms),
            "DWSIM_LOG_LEVEL": "INFO",
            # The test's tokens, whatever the home would give: a token in the environment wins.
            **{f"DWSIM_TOKEN_{role.upper()}": getattr(settings, f"token_{role}") for role in ROLES},
            **env,
        }
        if settings.database_url:
            self.env["DWSIM_DATABASE_URL"] = settings.database_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> BridgeProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [PYTHON, "-m", f"services.{self.service}"],
            cwd=PROJECT_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.settings.token_administrator}"},
            timeout=10,
        )

    async def health(self) -> dict[str, Any] | None:
        try:
            async with self.client() as http:
                response = await http.get("/health")
            return response.json() if response.status_code == 200 else None
        except httpx.HTTPError:
            return None

    async def assigned(self) -> list[str]:
        health = await self.health()
        if health is None or health.get("consumer") is None:
            return []
        return list(health["consumer"].get("assigned") or [])

    async def wait_ready(self, deadline_s: float = 30.0) -> None:
        """Until its API answers and the consumer group gave it partitions."""

        async def ready() -> bool:
            if not self.alive():
                raise AssertionError(
                    f"{self.service} exited early; see {self.log_path}\n{self.tail()}"
                )
            return bool(await self.assigned())

        await wait_for(ready, deadline_s, what=f"bridge on {self.url} to get partitions")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, deadline_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=deadline_s)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def get(self, path: str, **params: Any) -> Any:
        async with self.client() as http:
            response = await http.get(path, params=params)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    async def post(self, path: str, **params: Any) -> httpx.Response:
        async with self.client() as http:
            return await http.post(path, params=params)


# --------------------------------------------------------------------------------------------
# Events


def envelope(event_type: str, source: str, payload: BaseModel, correlation: str | None) -> bytes:
    event = Envelope[Any](
        event_type=event_type, source=source, payload=payload, correlation_id=correlation
    )
    return event.model_dump_json().encode()


def invoice_confirmed(**overrides: Any) -> InvoiceConfirmed:
    values: dict[str, Any] = {
        "invoice_id": uuid4(),
        "invoice_number": "PINV-0001",
        "legal_entity": "USPM",
        "customer_id": uuid4(),
        "customer_name": "Adventure Works",
        "contract_id": uuid4(),
        "currency": "USD",
        "invoice_date": date(2026, 11, 30),
        "total_amount": Decimal("1600.00"),
        "tax_amount": Decimal("160.00"),
        "payment_terms": "Net30",
        "invoice_address": {"street": "1 Main St", "city": "Seattle", "country": "US"},
        "expected_billed_lines": 2,
    }
    values.update(overrides)
    return InvoiceConfirmed(**values)


def actual_created(**overrides: Any) -> ActualCreated:
    values: dict[str, Any] = {
        "actual_id": uuid4(),
        "transaction_type": TransactionType.BILLED_SALES,
        "transaction_class": TransactionClass.TIME,
        "billing_type": BillingType.CHARGEABLE,
        "quantity": Decimal("8"),
        "unit_price": Decimal("200"),
        "amount": Decimal("1600"),
        "currency": "USD",
        "document_date": date(2026, 11, 3),
        "accounting_date": date(2026, 11, 3),
        "legal_entity": "USPM",
        "project_id": uuid4(),
    }
    values.update(overrides)
    return ActualCreated(**values)


def invoice_posted(invoice_id: UUID, actual_ids: list[UUID]) -> InvoicePosted:
    return InvoicePosted(
        invoice_id=invoice_id,
        legal_entity="USPM",
        customer_invoice_number="CIV-000001",
        voucher="VOU-0001",
        posting_date=date(2026, 12, 1),
        total_amount=Decimal("1600"),
        currency="USD",
        actuals=[
            ActualAccounting(
                actual_id=a,
                voucher="VOU-0001",
                voucher_date=date(2026, 12, 1),
                exchange_rate=Decimal("1"),
                accounting_currency_amount=Decimal("800"),
                tax_amount=Decimal("80"),
            )
            for a in actual_ids
        ],
    )


class Publisher:
    """A plain producer of source events (as Dataverse's or Finance's relay would send)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers(), linger_ms=2, acks="all"
        )

    async def __aenter__(self) -> Publisher:
        await self.producer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.producer.stop()

    async def send(
        self,
        topic: Topic,
        key: str | None,
        payload: BaseModel,
        event_type: str,
        source: str,
        correlation: Any = None,
    ) -> None:
        correlation = correlation or getattr(payload, "invoice_id", None)
        await self.producer.send(
            topic_name(topic, self.settings.topic_prefix),
            envelope(
                event_type, source, payload, None if correlation is None else str(correlation)
            ),
            key=None if key is None else key.encode(),
        )

    async def raw(self, topic: Topic, key: str | None, value: bytes) -> None:
        await self.producer.send(
            topic_name(topic, self.settings.topic_prefix),
            value,
            key=None if key is None else key.encode(),
        )

    async def confirm(self, invoice: InvoiceConfirmed) -> None:
        await self.send(
            Topic.INVOICE_CONFIRMED,
            str(invoice.invoice_id),
            invoice,
            "invoice.confirmed",
            "dataverse",
        )

    async def actual(self, *actuals: ActualCreated) -> None:
        """One `actuals-created` message carrying these actuals, keyed by the first one's
        invoice (else project), as Dataverse sends a transaction's run of one key."""
        first = actuals[0]
        await self.send(
            Topic.ACTUALS_CREATED,
            str(first.invoice_id or first.project_id),
            ActualsCreated(actuals=list(actuals)),
            "actuals.created",
            "dataverse",
            correlation=first.invoice_id,
        )

    async def flush(self) -> None:
        await self.producer.flush()


# --------------------------------------------------------------------------------------------
# Reading topics


@dataclass
class Received:
    """One message as a reader sees it; on a topic that carries runs of mapped records, one
    record of a message (see `per_record`)."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: dict[str, Any]


def per_record(envelope: dict[str, Any]) -> list[dict[str, Any]]:
    """An envelope as its target reads each record it carries: a message carrying a run
    (`payload.records`) gives one view per record, with the record as `payload`, its record
    id as `causation_id` and the run's size as `run_size`; any other envelope is one view."""
    payload = envelope.get("payload")
    if not isinstance(payload, dict) or not isinstance(payload.get("records"), list):
        return [envelope]
    runs = payload["records"]
    return [
        {
            **envelope,
            "payload": item["record"],
            "causation_id": item["record_id"],
            "run_size": len(runs),
        }
        for item in runs
    ]


class TopicReader:
    """Reads whole topics from the beginning, without a consumer group."""

    def __init__(self, settings: Settings, *topics: Topic | str) -> None:
        self.settings = settings
        self.names = [
            topic_name(t, settings.topic_prefix) if isinstance(t, Topic) else t for t in topics
        ]
        self.consumer: AIOKafkaConsumer | None = None
        self.messages: list[Received] = []

    async def __aenter__(self) -> TopicReader:
        # No group: every partition of every topic is assigned, read from the beginning.
        self.consumer = AIOKafkaConsumer(
            *self.names,
            bootstrap_servers=self.settings.bootstrap_servers(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
            metadata_max_age_ms=2_000,
        )
        await self.consumer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.consumer is not None
        await self.consumer.stop()

    async def poll(self) -> list[Received]:
        assert self.consumer is not None
        batch = await self.consumer.getmany(timeout_ms=50)
        new = [
            Received(m.topic, m.partition, m.offset, m.key.decode() if m.key else None, view)
            for ms in batch.values()
            for m in ms
            for view in per_record(json.loads(m.value))
        ]
        self.messages.extend(new)
        return new

    async def until(
        self, check: Callable[[list[Received]], bool], deadline_s: float = 30, what: str = ""
    ) -> list[Received]:
        async def done() -> bool:
            await self.poll()
            return check(self.messages)

        await wait_for(done, deadline_s, what=what or f"messages on {self.names}")
        return self.messages

    async def read_to_high_water(self, deadline_s: float = 30) -> list[Received]:
        """Every message on every partition up to the high-water mark that a fetch answered
        after this call began; returns all messages read so far.

        The mark comes from fetch responses, not from `end_offsets()` (ListOffsets), which the
        default broker under-reports by a few records per partition. A response received after
        the call began may answer a request sent before it, so the condition must hold on two
        rounds of responses, the second all received after the first round held.
        """
        consumer = self.consumer
        assert consumer is not None
        for round_ in ("first", "second"):
            asked_ms = time.time() * 1000

            async def caught_up(asked_ms: float = asked_ms) -> bool:
                await self.poll()
                partitions = consumer.assignment()
                expected = sum(len(consumer.partitions_for_topic(n) or ()) for n in self.names)
                if not partitions or len(partitions) < expected:
                    return False
                for tp in partitions:
                    polled, high = consumer.last_poll_timestamp(tp), consumer.highwater(tp)
                    if polled is None or polled < asked_ms or high is None:
                        return False
                    if await consumer.position(tp) < high:
                        return False
                return True

            await wait_for(
                caught_up, deadline_s, what=f"{self.names} read to the high-water mark ({round_})"
            )
        return self.messages

    def on(self, topic: Topic) -> list[Received]:
        name = topic_name(topic, self.settings.topic_prefix)
        return [m for m in self.messages if m.topic == name]


# --------------------------------------------------------------------------------------------
# A fake target (Finance or Dataverse) answering receipts


Policy = Callable[[Received], str | None]  # None: applied; a string: rejected with that reason


def apply_all(_: Received) -> str | None:
    return None


@dataclass
class FakeTarget:
    """Answers every delivery on the given target topics, re-sends included."""

    settings: Settings
    topics: tuple[Topic, ...] = (
        Topic.FO_INVOICE_PROPOSALS,
        Topic.FO_ACTUALS_STAGING,
        Topic.DV_ACTUALS_ACCOUNTING,
    )
    policy: Policy = apply_all
    delivered: list[Received] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> FakeTarget:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        # A target that crashed (a policy that raised, a receipt it could not send) fails the
        # test with its own error: swallowed, it left the test waiting for receipts that never
        # came and failing on a time-out that named something else.
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap_servers(), linger_ms=2, acks="all"
        )
        await producer.start()
        try:
            async with TopicReader(self.settings, *self.topics) as reader:
                while True:
                    for message in await reader.poll():
                        self.delivered.append(message)
                        await self._answer(producer, message)
        finally:
            await producer.stop()

    async def _answer(self, producer: AIOKafkaProducer, message: Received) -> None:
        reason = self.policy(message)
        value = message.value
        receipt = SyncReceipt(
            map_name=value["source"],
            record_key=message.key or "",
            source_event_id=UUID(value["causation_id"]),
            outcome=ReceiptOutcome.APPLIED if reason is None else ReceiptOutcome.REJECTED,
            reason=reason,
            target="finance" if "fo-" in message.topic else "dataverse",
            answers_event_id=UUID(value["event_id"]),
        )
        await producer.send(
            topic_name(Topic.SYNC_RECEIPTS, self.settings.topic_prefix),
            envelope(
                "sync.receipts",
                receipt.target,
                SyncReceipts(receipts=[receipt]),
                value.get("correlation_id"),
            ),
            key=(message.key or "").encode(),
        )

    def record_ids(self) -> set[str]:
        return {m.value["causation_id"] for m in self.delivered}


def python_executable() -> str:
    return PYTHON if Path(PYTHON).exists() else sys.executable
