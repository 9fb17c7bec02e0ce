"""The committed JSON Schemas still describe what the models accept, and the check bites."""

from __future__ import annotations

import copy
import json
from typing import Any

from schemas.compatibility import JSON_DIR, breaking_changes, check_committed, current_schemas
from schemas.topics import Topic


def test_every_topic_has_a_committed_schema() -> None:
    assert sorted(p.stem for p in JSON_DIR.glob("*.json")) == sorted(str(t) for t in Topic)


def test_current_models_break_no_consumer_of_the_committed_schemas() -> None:
    assert check_committed() == {}, "run `make schemas` only if the break is intended"


def _confirmed() -> dict[str, Any]:
    return copy.deepcopy(current_schemas()["invoice-confirmed"])


def _payload(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema["properties"]["payload"]["$ref"].split("/")[-1]
    payload: dict[str, Any] = schema["$defs"][ref]
    return payload


def test_removed_field_is_breaking() -> None:
    old, new = _confirmed(), _confirmed()
    del _payload(new)["properties"]["currency"]
    assert "payload.currency: removed" in breaking_changes(old, new)


def test_retyped_field_is_breaking() -> None:
    old, new = _confirmed(), _confirmed()
    _payload(new)["properties"]["expected_billed_lines"] = {"type": "string"}
    problems = breaking_changes(old, new)
    assert problems == ["payload.expected_billed_lines: type ['integer'] became ['string']"]


def test_added_optional_field_is_not_breaking() -> None:
    old, new = _confirmed(), _confirmed()
    _payload(new)["properties"]["purchase_order"] = {"type": "string"}
    assert breaking_changes(old, new) == []


def test_committed_files_are_valid_json() -> None:
    for path in JSON_DIR.glob("*.json"):
        assert json.loads(path.read_text())["title"].startswith("Envelope")
