"""How Finance's records look over HTTP: plain JSON, amounts and rates as strings.

Amounts stay strings so that no client reads a Decimal through a float.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

# A row as asyncpg returns it, or any mapping with the same keys.
Row = asyncpg.Record | Mapping[str, Any]


def plain(value: Any) -> Any:
    """A database value as JSON: Decimal, UUID and dates as strings."""
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def row_view(record: Row, drop: Sequence[str] = ()) -> dict[str, Any]:
    """Every column of a row as JSON, but those in `drop`."""
    return {k: plain(v) for k, v in record.items() if k not in drop}


def staging_view(record: Row) -> dict[str, Any]:
    """A staged actual. `reason` is why it is not (yet) imported: its refusal when invalid,
    else what the last import said; `invalid_reason` and `import_reason` give each apart."""
    view = row_view(record, drop=("reason",))
    invalid_reason = record["reason"] if record["status"] == "invalid" else None
    view["invalid_reason"] = invalid_reason
    view["reason"] = invalid_reason or record["import_reason"]
    return view


def proposal_view(record: Row, lines: Sequence[Row] | None = None) -> dict[str, Any]:
    """A proposal header; with its lines when given. `total_amount` and `tax_amount` are the
    header's ProposalTotal and SalesTaxAmount as Dataverse confirmed them."""
    view = row_view(record)
    view["total_amount"] = view["proposal_total"]
    view["tax_amount"] = view["sales_tax_amount"]
    if lines is not None:
        view["lines"] = [row_view(line) for line in lines]
        view["lines_amount"] = str(
            sum(
                (line["amount"] for line in lines if line["billing_type"] == "chargeable"),
                Decimal("0"),
            )
        )
    return view


def journal_view(record: Row, lines: Sequence[Row] | None = None) -> dict[str, Any]:
    """An integration journal header; with its lines when given."""
    view = row_view(record)
    if lines is not None:
        view["lines"] = [row_view(line) for line in lines]
        view["line_count"] = len(lines)
    return view


def voucher_view(record: Row, entries: Sequence[Row]) -> dict[str, Any]:
    """A voucher with its ledger entries and their balance (always zero)."""
    view = row_view(record)
    view["entries"] = [
        row_view(e, drop=("legal_entity", "accounting_date", "currency")) for e in entries
    ]
    view["balance"] = str(sum((e["amount"] for e in entries), Decimal("0")))
    return view
