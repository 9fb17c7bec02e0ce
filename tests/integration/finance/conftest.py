"""Finance in-process on the real broker and PostgreSQL: consumer, relay, API over ASGI.

The test plays the bridge: it publishes mapped records on `fo-invoice-proposals` and
`fo-actuals-staging` (source = map name; the bridge's record id, which every re-send repeats, is
the header's causation id and each staged actual's own `record_id`) and reads what Finance
publishes back with a plain consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import BaseModel

from schemas.envelope import Envelope
from schemas.mapped_events import (
    BridgeRecord,
    ProposalHeaderRecord,
    StagingActualRecord,
    StagingActualRecords,
)
from schemas.topics import Topic, topic_name
from services.common.db import create_pool, migrate_service
from services.common.inbox import InboxConsumer
from services.common.kafka import make_producer
from services.common.outbox import OutboxRelay
from services.common.settings import Settings
from services.finance.api import build_app
from services.finance.handlers import subscriptions
from services.finance.importer import ImportWorker
from tests.waiting import wait_for

MIGRATIONS = Path(__file__).resolve().parents[3] / "services" / "finance" / "migrations"
PROPOSAL_MAP = "Project invoice proposal V2 (invoices)"
ACTUALS_MAP = "Project Operations integration actuals (msdyn_actuals)"


@dataclass(frozen=True)
class Sent:
    """A mapped record as the test, playing the bridge, sent it."""

    envelope: Envelope[Any]
    record: Any  # the mapped record (header or actual), as the test built it
    record_id: UUID  # the bridge's record id, which the receipt answers


@dataclass
class Message:
    """One message read back from a topic."""

    topic: str
    key: str | None
    value: dict[str, Any]


@dataclass
class TopicReader:
    """Reads every message of some topics from the beginning, for assertions."""

    settings: Settings
    topics: list[str]
    messages: list[Message] = field(default_factory=list)
    _consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.settings.bootstrap_servers(),
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
            metadata_max_age_ms=1000,
        )
        await self._consumer.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def poll(self) -> None:
        assert self._consumer is not None
        batch = await self._consumer.getmany(timeout_ms=50)
        for tp, records in batch.items():
            for r in records:
                self.messages.append(
                    Message(tp.topic, r.key.decode() if r.key else None, json.loads(r.value))
                )

    def on(self, topic: Topic, settings: Settings) -> list[Message]:
        name = topic_name(topic, settings.topic_prefix)
        return [m for m in self.messages if m.topic == name]

    async def wait(
        self, check: Callable[[TopicReader], bool], what: str, deadline_s: float = 30
    ) -> None:
        async def condition() -> bool:
            await self.poll()
            return check(self)

        await wait_for(condition, deadline_s, what)


@dataclass
class Finance:
    """The running service's parts, and the bridge's side of the conversation."""

    settings: Settings
    pool: asyncpg.Pool
    client: httpx.AsyncClient
    consumer: InboxConsumer
    producer: AIOKafkaProducer
    reader: TopicReader

    @property
    def accountant(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.token_accountant}"}

    @property
    def clerk(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.token_receivables_clerk}"}

    async def publish(
        self,
        topic: Topic,
        key: str,
        payload: BaseModel,
        record_id: UUID | None = None,
        event_id: UUID | None = None,
    ) -> Sent:
        """Publish a mapped record as the bridge does (a staged actual as a run of one)."""
        record_id = record_id or uuid4()
        if topic is Topic.FO_INVOICE_PROPOSALS:
            event = Envelope[Any](
                event_id=event_id or uuid4(),
                event_type="proposal.header",
                source=PROPOSAL_MAP,
                payload=payload,
                correlation_id=key,
                causation_id=record_id,
            )
        else:
            assert isinstance(payload, StagingActualRecord)
            event = staging_event([(payload, record_id)], key, event_id)
        await self.send(topic, key, event)
        return Sent(event, payload, record_id)

    async def send(self, topic: Topic, key: str, event: Envelope[Any]) -> None:
        """Send an envelope as it is (same event id: a redelivery)."""
        await self.producer.send_and_wait(
            topic_name(topic, self.settings.topic_prefix),
            event.model_dump_json().encode(),
            key=key.encode(),
        )

    async def header(self, header: ProposalHeaderRecord) -> Sent:
        return await self.publish(Topic.FO_INVOICE_PROPOSALS, str(header.ProposalId), header)

    async def actual(self, actual: StagingActualRecord) -> Sent:
        key = str(actual.msdyn_invoice or actual.msdyn_project)
        return await self.publish(Topic.FO_ACTUALS_STAGING, key, actual)

    async def receipts(self) -> list[dict[str, Any]]:
        """Receipts read so far: the answers of every message, in order."""
        await self.reader.poll()
        return self._answers(self.reader)

    def _answers(self, reader: Any) -> list[dict[str, Any]]:
        return [
            answer
            for m in reader.on(Topic.SYNC_RECEIPTS, self.settings)
            for answer in m.value["payload"]["receipts"]
        ]

    async def wait_receipts(self, n: int, deadline_s: float = 30) -> list[dict[str, Any]]:
        await self.reader.wait(lambda r: len(self._answers(r)) >= n, f"{n} receipts", deadline_s)
        return await self.receipts()

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.client.get(path, params=params, headers=self.accountant)
        assert response.status_code == 200, response.text
        return response.json()

    async def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return await self.client.request(
            method, path, json=body, headers=self.accountant if headers is None else headers
        )

    async def setup_legal_entity(self, legal_entity: str = "USPM", currency: str = "USD") -> None:
        response = await self.call(
            "PUT",
            f"/legal-entities/{legal_entity}",
            {"accounting_currency": currency, "fiscal_year": 2026},
        )
        assert response.status_code == 200, response.text

    async def count(self, table: str) -> int:
        async with self.pool.acquire() as conn:
            # Table names come from the tests' own literals.
            value: int = await conn.fetchval(f"SELECT count(*) FROM {table}")
            return value


@contextlib.asynccontextmanager
async def running(*workers: Any) -> AsyncIterator[None]:
    """Run workers (run/stop) as tasks for the block; stop and await them after."""
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield
    finally:
        for w in workers:
            w.stop()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)


@pytest.fixture
async def finance(settings: Settings) -> AsyncIterator[Finance]:
    """Finance's consumer and relay running, its API reachable in-process."""
    pool = await create_pool(settings.service_database_url("finance"))
    await migrate_service(pool, "finance", MIGRATIONS)
    app = build_app()
    relay = OutboxRelay(pool, settings, "finance")
    consumer = InboxConsumer(
        pool, settings, f"{settings.topic_prefix}finance", subscriptions(settings)
    )
    app.state.pool = pool
    app.state.settings = settings
    app.state.service_name = "finance"
    app.state.relay = relay
    app.state.consumer = consumer
    producer = make_producer(settings, "test-bridge")
    await producer.start()
    reader = TopicReader(
        settings,
        [
            topic_name(t, settings.topic_prefix)
            for t in (
                Topic.SYNC_RECEIPTS,
                Topic.INVOICE_POSTED,
                Topic.JOURNAL_POSTED,
                Topic.PROPOSAL_HEADER_CHANGED,
            )
        ],
    )
    await reader.start()
    transport = httpx.ASGITransport(app=app)
    try:
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://finance") as client,
            running(relay, consumer),
        ):
            yield Finance(settings, pool, client, consumer, producer, reader)
    finally:
        await reader.stop()
        await producer.stop()
        await pool.close()


def import_worker(finance: Finance, interval_s: float = 0.1) -> ImportWorker:
    """The periodic import, fast, for tests that let it run."""
    return ImportWorker(
        finance.pool, finance.settings.model_copy(update={"import_interval_s": interval_s})
    )


# --- records as the bridge maps them ------------------------------------------------------------

PROJECT = UUID("11111111-0000-0000-0000-000000000001")
CONTRACT = UUID("22222222-0000-0000-0000-000000000001")
CONTRACT_LINE = UUID("33333333-0000-0000-0000-000000000001")
CUSTOMER = UUID("44444444-0000-0000-0000-000000000001")
DAY = date(2026, 11, 2)


def header_record(invoice_id: UUID, expected: int, **changes: Any) -> ProposalHeaderRecord:
    values: dict[str, Any] = {
        "ProposalId": invoice_id,
        "DataAreaId": "USPM",
        "InvoiceAccount": CUSTOMER,
        "ContractId": CONTRACT,
        "CurrencyCode": "USD",
        "InvoiceDate": date(2026, 11, 20),
        "ProposalTotal": Decimal("1760.00"),
        "SalesTaxAmount": Decimal("160.00"),
        "ExpectedBilledLines": expected,
    }
    values.update(changes)
    return ProposalHeaderRecord(**values)


def staging_event(
    records: list[tuple[StagingActualRecord, UUID]],
    correlation_id: str | None = None,
    event_id: UUID | None = None,
) -> Envelope[Any]:
    """A run of mapped actuals (each with its bridge record id) as the bridge sends it on
    `fo-actuals-staging`; correlated with the first actual's invoice, else its project."""
    first = records[0][0]
    return Envelope[Any](
        event_id=event_id or uuid4(),
        event_type="staging.actual",
        source=ACTUALS_MAP,
        payload=StagingActualRecords(
            records=[
                BridgeRecord[StagingActualRecord](record_id=rid, record=r) for r, rid in records
            ]
        ),
        correlation_id=correlation_id or str(first.msdyn_invoice or first.msdyn_project),
    )


def actual_record(transaction_type: str, **changes: Any) -> StagingActualRecord:
    values: dict[str, Any] = {
        "msdyn_actualid": uuid4(),
        "msdyn_transactiontype": transaction_type,
        "msdyn_transactionclassification": "Time",
        "msdyn_billingtype": "Chargeable",
        "msdyn_quantity": Decimal("8"),
        "msdyn_price": Decimal("200"),
        "msdyn_amount": Decimal("1600.00"),
        "msdyn_transactioncurrency": "USD",
        "msdyn_documentdate": DAY,
        "msdyn_accountingdate": DAY,
        "msdyn_legalentity": "USPM",
        "msdyn_project": PROJECT,
        "msdyn_contract": CONTRACT,
        "msdyn_contractline": CONTRACT_LINE,
        "msdyn_customer": CUSTOMER,
        "msdyn_billingmethod": "TimeAndMaterial",
    }
    values.update(changes)
    return StagingActualRecord(**values)


def milestone_record(invoice_id: UUID, amount: str, **changes: Any) -> StagingActualRecord:
    values: dict[str, Any] = {
        "msdyn_transactionclassification": "Milestone",
        "msdyn_billingmethod": "FixedPrice",
        "msdyn_quantity": Decimal("1"),
        "msdyn_price": Decimal(amount),
        "msdyn_amount": Decimal(amount),
        "msdyn_invoice": invoice_id,
    }
    values.update(changes)
    return actual_record("BilledSales", **values)
