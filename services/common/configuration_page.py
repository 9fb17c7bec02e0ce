"""The configuration page, `docs/configuration.md`: every `DWSIM_` setting that `Settings`
defines, with its default, the values it accepts and its description.

The page is generated from `Settings`, never written by hand, so that it cannot drift from the
code (a unit test compares the two). Regenerate it with `make docs`, or
`python -m services.common.configuration_page`; `--check` only tells whether it is current.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from services.common.settings import PROJECT_ROOT, Settings

PAGE = PROJECT_ROOT / "docs" / "configuration.md"
REGENERATE = "make docs"

_HEADER = f"""\
# Configuration

Every setting of dwsim is an environment variable with the `DWSIM_` prefix, read by
`Settings` (`services/common/settings.py`); each process reads them once at start. Unset, a
setting takes the default below, which points at the local infrastructure that `dwsim up` or
`make up` starts.

This page is generated from `Settings`: do not edit it by hand. After changing a setting, run
`{REGENERATE}`; a unit test (`tests/unit/test_configuration_doc.py`) fails while the page and
`Settings` disagree.

| variable | default | accepts | description |
|---|---|---|---|
"""


def configuration_page() -> str:
    """The whole page, one table row per field of `Settings`, in the order they are defined."""
    rows = [_row(name, field) for name, field in Settings.model_fields.items()]
    return _HEADER + "\n".join(rows) + "\n"


def environment_variable(name: str) -> str:
    """The environment variable that sets the field `name` of `Settings`."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    # A field read under another name (the role tokens: `configured_token_<role>` is set by
    # DWSIM_TOKEN_<ROLE>) carries that name as its serialization alias.
    alias = Settings.model_fields[name].serialization_alias
    return f"{prefix}{alias or name}".upper()


def _row(name: str, field: FieldInfo) -> str:
    cells = (
        f"`{environment_variable(name)}`",
        # A default made by a factory (the home) is shown as this checkout makes it.
        _default(field.get_default(call_default_factory=True)),
        _accepts(field),
        field.description or "",
    )
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _cell(text: str) -> str:
    # A pipe inside a cell would end it.
    return text.replace("|", "\\|").replace("\n", " ")


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, Path):
        # The page names the folder relative to the project, never this machine's path.
        try:
            return f"`{value.relative_to(PROJECT_ROOT).as_posix()}/` in the project folder"
        except ValueError:
            return f"`{value.as_posix()}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f"`{value}`" if value else "empty"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def _accepts(field: FieldInfo) -> str:
    kind = _kind(field.annotation)
    bounds = [_bound(m) for m in field.metadata]
    return ", ".join([kind, *(b for b in bounds if b)])


def _kind(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return _either([f"`{v}`" for v in get_args(annotation)])
    if origin in (Union, types.UnionType):
        present = [a for a in get_args(annotation) if a is not type(None)]
        return _either([_kind(a) for a in present]) + ", or unset"
    names = {
        bool: "true or false",
        int: "integer",
        float: "number",
        str: "text",
        Path: "path",
        SecretStr: "text (secret: never logged)",
    }
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _either(choices: list[str]) -> str:
    return " or ".join([", ".join(choices[:-1]), choices[-1]]) if len(choices) > 1 else choices[0]


# Bounds as pydantic records them (annotated-types' Ge, Gt, Le, Lt), by attribute name.
_BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))


def _bound(metadata: Any) -> str:
    for attribute, sign in _BOUNDS:
        value = getattr(metadata, attribute, None)
        if value is not None:
            return f"{sign} {value}"
    pattern = getattr(metadata, "pattern", None)
    return f"matching `{pattern}`" if pattern else ""


def main(argv: list[str]) -> int:
    """Write the page; with `--check`, only say whether it is current (exit code 1 if not)."""
    page = configuration_page()
    if "--check" in argv:
        current = PAGE.exists() and PAGE.read_text() == page
        if not current:
            print(f"{PAGE.relative_to(PROJECT_ROOT)} is out of date: run `{REGENERATE}`")
        return 0 if current else 1
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(page)
    print(f"wrote {PAGE.relative_to(PROJECT_ROOT)} ({len(Settings.model_fields)} settings)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
