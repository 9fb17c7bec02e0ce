"""Roles by bearer token: project manager, accountant, receivables clerk, administrator."""

from __future__ import annotations

import secrets
from enum import StrEnum
from typing import Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.common.settings import Settings


class Role(StrEnum):
    """Who may call an operation."""

    PROJECT_MANAGER = "project_manager"
    ACCOUNTANT = "accountant"
    RECEIVABLES_CLERK = "receivables_clerk"
    ADMINISTRATOR = "administrator"


bearer = HTTPBearer(auto_error=False)


def _token_of(settings: Settings, role: Role) -> str:
    return settings.role_token(role.value)


class RequireRole:
    """A FastAPI dependency: 401 without a token or with an unknown one, 403 with a token of
    another role. `roles` says who may call the operation (tests read it to pick a token)."""

    def __init__(self, *roles: Role) -> None:
        self.roles = roles

    # async although it awaits nothing: FastAPI runs a plain function dependency in a worker
    # thread, one thread hand-off per request for a string comparison.
    async def __call__(
        self,
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> Role:
        roles = self.roles
        if credentials is None:
            raise HTTPException(
                401,
                "missing bearer token: send 'Authorization: Bearer <token>' of role "
                + " or ".join(r.value for r in roles),
                headers={"WWW-Authenticate": "Bearer"},
            )
        role = role_of(request.app.state.settings, credentials)
        if role is None:
            raise HTTPException(401, "unknown bearer token", headers={"WWW-Authenticate": "Bearer"})
        if role not in roles:
            raise HTTPException(
                403,
                f"role {role.value} may not do this; it needs "
                + " or ".join(r.value for r in roles),
            )
        return role


def role_of(settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> Role | None:
    """The role whose token was sent, or None (no token, or an unknown one)."""
    if credentials is None:
        return None
    # Compared as bytes: a header may carry any Latin-1 character, and compare_digest
    # refuses str with characters beyond ASCII (a TypeError, answered 500).
    given = credentials.credentials.encode("utf-8", "surrogateescape")
    for role in Role:
        if secrets.compare_digest(given, _token_of(settings, role).encode()):
            return role
    return None


def require_role(*roles: Role) -> Any:
    """The dependency of an operation only these roles may call (see `RequireRole`).

    Declared as a security requirement whose list names the roles, so the OpenAPI page says
    who may call each operation: `security: [{"HTTPBearer": ["accountant"]}]` (OpenAPI 3.1
    allows role names there for schemes other than OAuth2).
    """
    return Security(RequireRole(*roles), scopes=[role.value for role in roles])
