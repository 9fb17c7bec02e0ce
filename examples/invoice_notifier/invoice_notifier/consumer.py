"""The consumer: reads `invoice-posted`, notifies once per event, commits after storing."""

from __future__ import annotations

import asyncio
import contextlib
import json
from decimal import Decimal
from typing import Any

from aiokafka import AIOKafkaConsumer

from invoice_notifier.store import Notification, NotificationStore


def notification_of(payload: dict[str, Any]) -> Notification:
    """The customer's notification for an `invoice-posted` payload."""
    total = Decimal(str(payload["total_amount"]))
    number = str(payload["customer_invoice_number"])
    return Notification(
        invoice_id=str(payload["invoice_id"]),
        invoice_number=number,
        legal_entity=str(payload["legal_entity"]),
        total_amount=total,
        currency=str(payload["currency"]),
        posting_date=str(payload["posting_date"]),
        message=f"Invoice {number} of {total} {payload['currency']} is posted.",
    )


class InvoiceNotifier:
    """A consumer group member on `invoice-posted`, storing to its own SQLite file."""

    def __init__(
        self, bootstrap_servers: str, topic: str, group_id: str, store: NotificationStore
    ) -> None:
        self.store = store
        self.duplicates_ignored = 0
        self.events_seen = 0
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # dwsim's local broker holds a JoinGroup for half the session timeout: a short
            # session joins in seconds (Kafka's defaults suit a real cluster).
            session_timeout_ms=3_000,
            heartbeat_interval_ms=1_000,
            metadata_max_age_ms=5_000,
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Join the group and consume in the background."""
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop consuming and leave the group."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    self.handle(record.value)
            if batch:
                # After the notifications are stored: a crash before this re-reads the batch,
                # and the event ids make the repeat harmless.
                await self._consumer.commit()

    def handle(self, value: bytes | None) -> None:
        """Notify for one event (an undecodable one is skipped: not ours to fix)."""
        if value is None:
            return
        try:
            event = json.loads(value)
            notification = notification_of(event["payload"])
        except (ValueError, KeyError, TypeError):
            return
        self.events_seen += 1
        if not self.store.record(str(event["event_id"]), notification):
            self.duplicates_ignored += 1
