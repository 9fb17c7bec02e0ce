"""Finance's OpenAPI page documents what every route of its own returns (issue 20): a named
model, not a free-form object."""

from __future__ import annotations

from typing import Any

from services.finance.api import build_app

# The routes every service shares (services/common/api.py), not Finance's own.
SHARED_TAGS = {"health", "parked events", "outbox", "metrics"}


def _names_a_model(schema: dict[str, Any]) -> bool:
    return "$ref" in schema or "$ref" in schema.get("items", {})


def test_every_success_response_of_finance_names_its_model() -> None:
    openapi = build_app().openapi()
    operations = [
        (f"{method.upper()} {path}", operation)
        for path, by_method in openapi["paths"].items()
        for method, operation in by_method.items()
        if not SHARED_TAGS & set(operation.get("tags", []))
    ]
    assert len(operations) > 20
    undocumented = [
        name
        for name, operation in operations
        for status, response in operation["responses"].items()
        if status.startswith("2")
        and status != "204"
        and not _names_a_model(
            response.get("content", {}).get("application/json", {}).get("schema", {})
        )
    ]
    assert undocumented == []
