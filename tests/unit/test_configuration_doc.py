"""docs/configuration.md lists every `DWSIM_` setting of `Settings`, as `Settings` defines it.

The page is generated (`make docs`); these tests fail when someone changes a setting and does
not regenerate it, or adds a setting without a description.
"""

from __future__ import annotations

from services.common.configuration_page import (
    PAGE,
    REGENERATE,
    configuration_page,
    environment_variable,
)
from services.common.settings import PROJECT_ROOT, Settings

HOW_TO_FIX = f"regenerate it with `{REGENERATE}` (python -m services.common.configuration_page)"


def test_every_setting_has_a_description() -> None:
    undescribed = [n for n, f in Settings.model_fields.items() if not (f.description or "").strip()]
    assert not undescribed, f"settings without description= in Settings: {undescribed}"


def test_every_setting_is_on_the_configuration_page() -> None:
    page = PAGE.read_text() if PAGE.exists() else ""
    missing = [
        environment_variable(name)
        for name in Settings.model_fields
        if f"| `{environment_variable(name)}` |" not in page
    ]
    assert not missing, f"{PAGE.relative_to(PROJECT_ROOT)} lacks {missing}: {HOW_TO_FIX}"


def test_configuration_page_is_what_settings_generates() -> None:
    written = PAGE.read_text() if PAGE.exists() else ""
    assert written == configuration_page(), (
        f"{PAGE.relative_to(PROJECT_ROOT)} disagrees with Settings "
        f"(services/common/settings.py): {HOW_TO_FIX}"
    )


def test_the_page_names_no_path_of_this_machine() -> None:
    assert str(PROJECT_ROOT) not in configuration_page()
