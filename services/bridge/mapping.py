"""Table maps and how one is applied: legs, filters, field mappings, and the one-way rule.

A table map has one or more *legs*. A leg is one direction of travel with its own source topics,
target topic, filter and field mappings; the map's state (running, paused, ...) belongs to the
map (`domain.py`) and so applies to all of its legs at once, as a dual-write map pauses in both
directions at once. The two table maps of the integration are data, in `table_maps.py`.
Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from services.bridge.domain import BridgeRuleError
from services.common.errors import OneWayViolation

# A JSON-compatible scalar: what a declarative filter compares a field with.
JsonScalar = str | int | bool | None


# --------------------------------------------------------------------------------------------
# Errors


class MapDefinitionError(BridgeRuleError):
    """A table map definition contradicts itself (e.g. its key names a field it never writes)."""


class MappingError(BridgeRuleError):
    """A record cannot be mapped; the record is kept as failed with this message as reason."""


class MissingSourceField(MappingError):
    """A required source field is absent or null."""

    def __init__(self, map_name: str | None, leg_name: str, source_field: str) -> None:
        self.map_name = map_name
        self.leg_name = leg_name
        self.source_field = source_field
        super().__init__(
            f"{_where(map_name, leg_name)}: required source field '{source_field}' is missing"
        )


class UnmappedValue(MappingError):
    """A value has no entry in the field's value map (an option set the map does not know)."""

    def __init__(
        self, map_name: str | None, leg_name: str, source_field: str, value: object
    ) -> None:
        self.map_name = map_name
        self.leg_name = leg_name
        self.source_field = source_field
        self.value = value
        super().__init__(
            f"{_where(map_name, leg_name)}: value {value!r} of source field "
            f"'{source_field}' has no entry in its value map"
        )


# --------------------------------------------------------------------------------------------
# Table map model


class Side(StrEnum):
    """The two applications a table map connects."""

    DATAVERSE = "dataverse"
    FINANCE = "finance"


class Direction(StrEnum):
    """Direction of travel of one leg of a table map."""

    DATAVERSE_TO_FINANCE = "dataverse_to_finance"
    FINANCE_TO_DATAVERSE = "finance_to_dataverse"

    @property
    def source_side(self) -> Side:
        return Side.DATAVERSE if self is Direction.DATAVERSE_TO_FINANCE else Side.FINANCE

    @property
    def target_side(self) -> Side:
        return Side.FINANCE if self is Direction.DATAVERSE_TO_FINANCE else Side.DATAVERSE


@dataclass(frozen=True)
class FieldEquals:
    """Filter condition: the record passes only if `field` equals `value`."""

    field: str
    value: JsonScalar
    reason: str | None = None

    def failure_reason(self, record: Mapping[str, Any]) -> str | None:
        """None when the record passes, else why it is filtered out."""
        if field_value(record, self.field) == self.value:
            return None
        return self.reason or f"{self.field} is not {self.value!r}"

    def describe(self) -> dict[str, Any]:
        return {"kind": "field_equals", "field": self.field, "value": self.value}


@dataclass(frozen=True)
class FieldNotTrue:
    """Filter condition: the record passes unless the boolean `field` is true (absent = false)."""

    field: str
    reason: str | None = None

    def failure_reason(self, record: Mapping[str, Any]) -> str | None:
        """None when the record passes, else why it is filtered out."""
        value = field_value(record, self.field)
        # A flag like skip_sync decides whether data leaves the source: a string "true" or a 1
        # read as "not true" would sync what should stay, so anything not boolean is an error.
        if value is not None and not isinstance(value, bool):
            raise MappingError(
                f"filter field '{self.field}' must be true, false or absent; got {value!r}"
            )
        if value is True:
            return self.reason or f"{self.field} is true"
        return None

    def describe(self) -> dict[str, Any]:
        return {"kind": "field_not_true", "field": self.field}


FilterCondition = FieldEquals | FieldNotTrue


@dataclass(frozen=True)
class FieldMapping:
    """Copy one source field to one target field, through a value map for option sets.

    The value is copied as it is (a Decimal that arrives as a string stays a string): the target
    validates and interprets it. An absent optional field is written as null, so every target
    record has every field of its map.
    """

    source: str
    target: str
    value_map: Mapping[str, str] | None = None
    required: bool = True


@dataclass(frozen=True)
class Explode:
    """Turn one event into one record per element of the list in `list_field`.

    Each element is a record of its own: the leg's filter and field mappings apply to it.
    """

    list_field: str


@dataclass(frozen=True)
class MapLeg:
    """One direction of a table map: where records come from, where they go, and how."""

    name: str
    direction: Direction
    source_topics: tuple[str, ...]
    target_topic: str
    field_mappings: tuple[FieldMapping, ...]
    integration_key: tuple[str, ...]
    filter: tuple[FilterCondition, ...] = ()
    explode: Explode | None = None

    def __post_init__(self) -> None:
        targets = [m.target for m in self.field_mappings]
        duplicates = sorted({t for t in targets if targets.count(t) > 1})
        if duplicates:
            raise MapDefinitionError(f"leg '{self.name}': target fields mapped twice: {duplicates}")
        if not self.source_topics:
            raise MapDefinitionError(f"leg '{self.name}': no source topic")
        if not self.integration_key:
            raise MapDefinitionError(f"leg '{self.name}': empty integration key")
        for key_field in self.integration_key:
            mapping = self.mapping_for_target(key_field)
            if mapping is None:
                raise MapDefinitionError(
                    f"leg '{self.name}': integration key field '{key_field}' is not a target field"
                )
            if not mapping.required:
                # A record without its key could not be matched at the target: refuse the map.
                raise MapDefinitionError(
                    f"leg '{self.name}': integration key field '{key_field}' maps from "
                    f"optional source field '{mapping.source}'"
                )

    def mapping_for_target(self, target: str) -> FieldMapping | None:
        return next((m for m in self.field_mappings if m.target == target), None)


@dataclass(frozen=True)
class TableMap:
    """A dual-write table map: a name, a version and its legs, which share the map's state."""

    name: str
    version: str
    legs: tuple[MapLeg, ...]

    def __post_init__(self) -> None:
        if not self.legs:
            raise MapDefinitionError(f"map '{self.name}': no legs")
        names = [leg.name for leg in self.legs]
        if len(set(names)) != len(names):
            raise MapDefinitionError(f"map '{self.name}': leg names repeat: {names}")

    @property
    def source_topics(self) -> tuple[str, ...]:
        return tuple(t for leg in self.legs for t in leg.source_topics)

    @property
    def target_topics(self) -> tuple[str, ...]:
        return tuple(leg.target_topic for leg in self.legs)

    @property
    def directions(self) -> frozenset[Direction]:
        return frozenset(leg.direction for leg in self.legs)

    def leg(self, name: str) -> MapLeg:
        for leg in self.legs:
            if leg.name == name:
                return leg
        raise KeyError(f"map '{self.name}' has no leg '{name}'")


def legs_for_topic(maps: Sequence[TableMap], topic: str) -> list[tuple[TableMap, MapLeg]]:
    """Every (map, leg) that reads from `topic`: how a handler routes an incoming event."""
    return [(m, leg) for m in maps for leg in m.legs if topic in leg.source_topics]


@dataclass(frozen=True)
class MappedRecord:
    """A record ready for the target topic; `key` is the integration key's value(s)."""

    map_name: str | None
    leg_name: str
    target_topic: str
    key: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Filtered:
    """A record the leg's filter left out, kept (and counted) with its reason."""

    map_name: str | None
    leg_name: str
    reason: str
    # The integration key read from the source fields, so a person can find the record; None
    # when the record lacks them (a filtered record is not required to be mappable).
    source_key: str | None


# Several key fields are joined with this separator; a single field is its value unchanged.
KEY_SEPARATOR: Final = "|"


def field_value(record: Mapping[str, Any], name: str) -> Any:
    """The value of `name` in `record`, None when absent."""
    return record.get(name)


def _where(map_name: str | None, leg_name: str) -> str:
    """Names the leg (and its map when known) at the start of an error message."""
    return f"leg '{leg_name}'" if map_name is None else f"map '{map_name}' leg '{leg_name}'"


def apply_mapping(
    leg: MapLeg, record: Mapping[str, Any], table_map: TableMap | None = None
) -> MappedRecord | Filtered:
    """Map one source record through `leg`: filter, then copy field by field.

    `table_map` only names the map in results and errors (None when not given). For a leg
    that explodes, `record` is one element of the list; use `map_event` for a whole event.

    Raises MissingSourceField for an absent or null required field and UnmappedValue for an
    option the value map does not know.
    """
    map_name = None if table_map is None else table_map.name
    for condition in leg.filter:
        reason = condition.failure_reason(record)
        if reason is not None:
            return Filtered(map_name, leg.name, reason, source_key(leg, record))
    payload: dict[str, Any] = {}
    for mapping in leg.field_mappings:
        value = field_value(record, mapping.source)
        if value is None:
            if mapping.required:
                raise MissingSourceField(map_name, leg.name, mapping.source)
            payload[mapping.target] = None
            continue
        if mapping.value_map is not None:
            if not isinstance(value, str) or value not in mapping.value_map:
                raise UnmappedValue(map_name, leg.name, mapping.source, value)
            value = mapping.value_map[value]
        payload[mapping.target] = value
    # Key fields are required (checked when the leg is built), so every one is present here.
    key = KEY_SEPARATOR.join(str(payload[k]) for k in leg.integration_key)
    return MappedRecord(map_name, leg.name, leg.target_topic, key, payload)


def map_event(
    leg: MapLeg, payload: Mapping[str, Any], table_map: TableMap | None = None
) -> list[MappedRecord | Filtered]:
    """Map one event: one result, or one per list element when the leg explodes."""
    if leg.explode is None:
        return [apply_mapping(leg, payload, table_map)]
    map_name = None if table_map is None else table_map.name
    list_field = leg.explode.list_field
    items = field_value(payload, list_field)
    if items is None:
        raise MissingSourceField(map_name, leg.name, list_field)
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        raise MappingError(
            f"{_where(map_name, leg.name)}: source field '{list_field}' must be a list of objects"
        )
    return [apply_mapping(leg, item, table_map) for item in items]


def source_key(leg: MapLeg, record: Mapping[str, Any]) -> str | None:
    """The integration key read from the source fields (None when one is missing), so a
    record that cannot be mapped or is filtered can still be found by a person."""
    parts: list[str] = []
    for key_field in leg.integration_key:
        mapping = leg.mapping_for_target(key_field)
        value = None if mapping is None else field_value(record, mapping.source)
        if value is None:
            return None
        parts.append(str(value))
    return KEY_SEPARATOR.join(parts)


def describe(table_map: TableMap) -> dict[str, Any]:
    """The whole map as JSON-compatible data, for the admin API and the CLI."""
    return {
        "name": table_map.name,
        "version": table_map.version,
        "legs": [
            {
                "name": leg.name,
                "direction": leg.direction.value,
                "source_topics": list(leg.source_topics),
                "target_topic": leg.target_topic,
                "explode": None if leg.explode is None else {"list_field": leg.explode.list_field},
                "filter": [condition.describe() for condition in leg.filter],
                "integration_key": list(leg.integration_key),
                "field_mappings": [
                    {
                        "source": m.source,
                        "target": m.target,
                        "required": m.required,
                        "value_map": (
                            None
                            if m.value_map is None
                            else {str(k): v for k, v in m.value_map.items()}
                        ),
                    }
                    for m in leg.field_mappings
                ],
            }
            for leg in table_map.legs
        ],
    }


# --------------------------------------------------------------------------------------------
# One-way enforcement


def check_direction(table_map: TableMap, source_side: Side, target_side: Side) -> None:
    """Refuse a write from `source_side` to `target_side` that no leg of the map carries.

    The proposal map only goes Dataverse to Finance: a proposal header changed in Finance must
    never reach Dataverse, so such an event raises OneWayViolation (the handler logs it and
    keeps the event with its reason).
    """
    for leg in table_map.legs:
        if leg.direction.source_side is source_side and leg.direction.target_side is target_side:
            return
    carried = ", ".join(sorted(d.value for d in table_map.directions))
    raise OneWayViolation(
        f"map '{table_map.name}' does not carry {source_side.value} to {target_side.value} "
        f"(carries: {carried}); the write is refused"
    )
