"""JSON Schema export of every topic's envelope, and the check that a change breaks no consumer.

A consumer built against the committed schema breaks when a field it may read disappears or
changes type, or when a field becomes required that old producers never sent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.envelope import Envelope
from schemas.registry import TOPIC_PAYLOADS

JSON_DIR = Path(__file__).parent / "json"


def current_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of each topic's envelope, keyed by topic base name."""
    return {
        str(topic): Envelope[model].model_json_schema()  # type: ignore[valid-type]
        for topic, model in TOPIC_PAYLOADS.items()
    }


def export(folder: Path = JSON_DIR) -> list[Path]:
    """Write `<topic>.json` for every topic; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for topic, schema in current_schemas().items():
        path = folder / f"{topic}.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        resolved: dict[str, Any] = root["$defs"][ref.split("/")[-1]]
        return resolved
    return schema


def _types(schema: dict[str, Any], root: dict[str, Any]) -> set[str]:
    schema = _resolve(schema, root)
    if "anyOf" in schema:
        return set().union(*(_types(s, root) for s in schema["anyOf"]))
    if "enum" in schema and "type" not in schema:
        return {"string"}
    if "const" in schema:
        return {type(schema["const"]).__name__}
    t = schema.get("type")
    if isinstance(t, list):
        return set(t)
    return {t} if isinstance(t, str) else {"object"}


def breaking_changes(
    old: dict[str, Any],
    new: dict[str, Any],
    path: str = "",
    old_root: Any = None,
    new_root: Any = None,
) -> list[str]:
    """What in `new` would break a consumer of `old` (removed, retyped, newly required)."""
    old_root = old_root or old
    new_root = new_root or new
    old = _resolve(old, old_root)
    new = _resolve(new, new_root)
    problems: list[str] = []
    old_props: dict[str, Any] = old.get("properties", {})
    new_props: dict[str, Any] = new.get("properties", {})
    for name, old_field in old_props.items():
        where = f"{path}.{name}" if path else name
        if name not in new_props:
            problems.append(f"{where}: removed")
            continue
        old_t, new_t = _types(old_field, old_root), _types(new_props[name], new_root)
        if not old_t <= new_t:
            problems.append(f"{where}: type {sorted(old_t)} became {sorted(new_t)}")
            continue
        problems += breaking_changes(old_field, new_props[name], where, old_root, new_root)
    # Messages already on the topic lack a field that only now became required.
    for name in sorted(set(new.get("required", [])) - set(old.get("required", []))):
        where = f"{path}.{name}" if path else name
        problems.append(f"{where}: newly required")
    return problems


def check_committed(folder: Path = JSON_DIR) -> dict[str, list[str]]:
    """Breaking changes of the current models against the committed files, per topic."""
    current = current_schemas()
    report: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.json")):
        topic = path.stem
        if topic not in current:
            report[topic] = ["topic removed"]
            continue
        problems = breaking_changes(json.loads(path.read_text()), current[topic])
        if problems:
            report[topic] = problems
    return report


if __name__ == "__main__":
    for written in export():
        print(written.relative_to(Path.cwd()) if written.is_relative_to(Path.cwd()) else written)
