"""The roles' bearer tokens of one home: generated once, kept beside the database passwords.

A constant default token would let anyone on the machine act as administrator, so each home
gets its own random tokens in `$DWSIM_HOME/tokens.json` (mode 0600, as `secrets.json`). The
services, the CLI, the demo and the tests read them from there (`Settings.role_token`); a token
set in the environment (`DWSIM_TOKEN_<ROLE>`) wins over the file.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from infra.processes import read_state, write_state
from services.common.settings import ROLES, TOKENS_FILE, Settings


def tokens_path(settings: Settings) -> Path:
    """Where the home's generated tokens are kept."""
    return settings.state_file(TOKENS_FILE)


def ensure_tokens(settings: Settings) -> dict[str, str]:
    """Generate the tokens of the roles that have none in this home yet; returns only those
    generated now (empty when the home had them all), so a caller can show them once."""
    path = tokens_path(settings)
    current = read_state(path) or {}
    new = {role: secrets.token_urlsafe(24) for role in ROLES if role not in current}
    if new:
        write_state(path, {**current, **new})
    return new


def describe_new_tokens(settings: Settings, new: dict[str, str]) -> list[str]:
    """Lines that show newly generated tokens once and say where they are kept."""
    if not new:
        return []
    width = max(len(role) for role in new)
    return [
        f"bearer tokens generated for this home (shown once; kept in {tokens_path(settings)}):",
        *(f"  {role:<{width}}  {token}" for role, token in new.items()),
        "  a DWSIM_TOKEN_<ROLE> variable set in the environment wins over the file.",
    ]
