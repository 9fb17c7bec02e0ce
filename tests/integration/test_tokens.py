"""The roles' bearer tokens: generated once per home, readable only by its owner, read from
there by everything, overridden by `DWSIM_TOKEN_<ROLE>`; no home shares a guessable one."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from infra.tokens import ensure_tokens, tokens_path
from services.common.auth import Role
from services.common.settings import PROJECT_ROOT, ROLES, Settings, TokensNotGenerated

# The constants every home shared before tokens were generated.
OLD_CONSTANTS = {
    "local-project-manager",
    "local-accountant",
    "local-receivables-clerk",
    "local-administrator",
}


@pytest.fixture
def no_token_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own DWSIM_TOKEN_* must not decide these tests."""
    for role in ROLES:
        monkeypatch.delenv(f"DWSIM_TOKEN_{role.upper()}", raising=False)


def test_the_roles_of_the_api_are_the_roles_with_tokens() -> None:
    assert {role.value for role in Role} == set(ROLES)


def test_each_home_gets_its_own_random_tokens_readable_only_by_its_owner(
    tmp_path: Path, no_token_variables: None
) -> None:
    first, second = Settings(home=tmp_path / "a"), Settings(home=tmp_path / "b")
    generated = ensure_tokens(first)
    assert set(generated) == set(ROLES)
    assert len(set(generated.values())) == len(ROLES)  # one per role
    assert all(len(token) >= 32 for token in generated.values())
    assert not OLD_CONSTANTS & set(generated.values())
    assert stat.S_IMODE(tokens_path(first).stat().st_mode) == 0o600
    assert first.role_tokens() == generated

    # Generated once: a second start keeps them and has nothing new to show.
    assert ensure_tokens(first) == {}
    assert Settings(home=first.home).role_tokens() == generated

    assert not set(ensure_tokens(second).values()) & set(generated.values())


def test_settings_made_before_the_tokens_were_generated_find_them_after(
    tmp_path: Path, no_token_variables: None
) -> None:
    # As `dwsim demo` does: its settings exist before its stack generates the home's tokens.
    settings = Settings(home=tmp_path)
    with pytest.raises(TokensNotGenerated) as refused:
        _ = settings.token_administrator
    message = str(refused.value)
    assert str(tokens_path(settings)) in message and "dwsim up" in message
    assert "DWSIM_TOKEN_ADMINISTRATOR" in message
    generated = ensure_tokens(settings)
    assert settings.token_administrator == generated["administrator"]
    assert settings.token_project_manager == generated["project_manager"]
    # A copy for another home (the bench's, a scenario's) reads that home's tokens.
    other = settings.model_copy(update={"home": tmp_path / "bench"})
    ensure_tokens(other)
    assert other.token_administrator != settings.token_administrator


def test_a_token_set_in_the_environment_wins_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_token_variables: None
) -> None:
    generated = ensure_tokens(Settings(home=tmp_path))
    monkeypatch.setenv("DWSIM_TOKEN_ACCOUNTANT", "the-accountants-own")
    settings = Settings(home=tmp_path)
    assert settings.token_accountant == "the-accountants-own"
    assert settings.token_receivables_clerk == generated["receivables_clerk"]
    assert Settings(home=tmp_path, token_accountant="in-code").token_accountant == "in-code"


def test_a_child_process_gets_the_configured_tokens_under_their_variable(
    tmp_path: Path, no_token_variables: None
) -> None:
    from services.simulator.processes import settings_environment

    env = settings_environment(Settings(home=tmp_path, token_administrator="chosen"))
    assert env["DWSIM_TOKEN_ADMINISTRATOR"] == "chosen"
    assert "DWSIM_TOKEN_ACCOUNTANT" not in env  # unset: the child reads the home's file


def test_a_service_without_tokens_refuses_to_start_and_names_the_file(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DWSIM_")}
    env["DWSIM_HOME"] = str(tmp_path)
    for service in ("dataverse", "bridge"):
        result = subprocess.run(
            [sys.executable, "-m", f"services.{service}"],
            env=env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        said = result.stdout + result.stderr
        assert result.returncode != 0, said
        assert "TokensNotGenerated" in said, said
        assert str(tmp_path / "tokens.json") in said and "dwsim up" in said, said
