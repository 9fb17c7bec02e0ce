"""The notifier's own database: SQLite, one file.

Idempotency is dwsim's event contract (docs/events.md): delivery is at least once, so the same
event can arrive twice (a replay after the broker lost its log, a rebalance before an offset
commit). The event id is recorded in the same transaction as the notification it caused; a
repeat finds its id and changes nothing. A JSON-lines file could not do that in one atomic step.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS processed_event (
    event_id TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS notification (
    invoice_id TEXT PRIMARY KEY,
    invoice_number TEXT NOT NULL,
    legal_entity TEXT NOT NULL,
    total_amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    posting_date TEXT NOT NULL,
    message TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Notification:
    """What the customer is told about one posted invoice."""

    invoice_id: str
    invoice_number: str
    legal_entity: str
    total_amount: Decimal
    currency: str
    posting_date: str
    message: str


class NotificationStore:
    """Notifications and the ids of the events that made them."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path)
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def record(self, event_id: str, notification: Notification) -> bool:
        """Store the notification of a new event; False (nothing written) for a repeat."""
        with self._db:  # one transaction: the event id and its effect, or neither
            seen = self._db.execute(
                "INSERT OR IGNORE INTO processed_event (event_id) VALUES (?)", (event_id,)
            )
            if seen.rowcount == 0:
                return False
            self._db.execute(
                "INSERT INTO notification VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    notification.invoice_id,
                    notification.invoice_number,
                    notification.legal_entity,
                    str(notification.total_amount),
                    notification.currency,
                    notification.posting_date,
                    notification.message,
                ),
            )
            return True

    def notifications(self) -> list[Notification]:
        """Every notification, by invoice number."""
        rows = self._db.execute(
            "SELECT invoice_id, invoice_number, legal_entity, total_amount, currency, "
            "posting_date, message FROM notification ORDER BY invoice_number"
        ).fetchall()
        return [Notification(r[0], r[1], r[2], Decimal(r[3]), r[4], r[5], r[6]) for r in rows]

    def of(self, invoice_id: str) -> Notification | None:
        """The notification of one invoice, if it was made."""
        return next((n for n in self.notifications() if n.invoice_id == invoice_id), None)
