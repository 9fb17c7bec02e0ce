"""The string form of a decimal in JSON Schema: a pattern, so the schema accepts what we do.

Pydantic declares a `Decimal` field as `number | string` with no constraint on the string, so
by the schema `""` or `"abc"` is a valid amount, which validation then refuses: a client (or a
fuzzer) reading the schema cannot tell. These markers give the string form the pattern of the
decimals the field accepts; the number form keeps its `minimum`.
"""

from __future__ import annotations

from pydantic import GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

# Plain decimal notation, no sign, no exponent: 0, 12, 8.5, 0.125.
NON_NEGATIVE = r"^[0-9]+(\.[0-9]+)?$"
# The same with at least one digit other than 0: greater than zero.
POSITIVE = r"^([0-9]*[1-9][0-9]*(\.[0-9]+)?|[0-9]+\.[0-9]*[1-9][0-9]*)$"


class DecimalText:
    """`Annotated[Decimal, Field(ge=0), DecimalText(NON_NEGATIVE)]`: the string branch of the
    field's JSON Schema gets `pattern`."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        for branch in schema.get("anyOf", [schema]):
            if branch.get("type") == "string":
                branch["pattern"] = self.pattern
        return schema
