"""Roles by bearer token: project manager, accountant, receivables clerk, administrator."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Coroutine
from enum import StrEnum
from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.common.settings import Settings


class Role(StrEnum):
    """Who may call an operation."""

    PROJECT_MANAGER = "project_manager"
    ACCOUNTANT = "accountant"
    RECEIVABLES_CLERK = "receivables_clerk"
    ADMINISTRATOR = "administrator"


_bearer = HTTPBearer(auto_error=False)


def _token_of(settings: Settings, role: Role) -> str:
    return settings.role_token(role.value)


def require_role(*roles: Role) -> Callable[..., Coroutine[Any, Any, Role]]:
    """A FastAPI dependency: 401 without a token, 403 with a token of another role."""

    # async although it awaits nothing: FastAPI runs a plain function dependency in a worker
    # thread, one thread hand-off per request for a string comparison.
    async def check(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
    ) -> Role:
        if credentials is None:
            raise HTTPException(
                401,
                "missing bearer token: send 'Authorization: Bearer <token>' of role "
                + " or ".join(r.value for r in roles),
                headers={"WWW-Authenticate": "Bearer"},
            )
        settings: Settings = request.app.state.settings
        for role in Role:
            if secrets.compare_digest(credentials.credentials, _token_of(settings, role)):
                if role in roles:
                    return role
                raise HTTPException(
                    403,
                    f"role {role.value} may not do this; it needs "
                    + " or ".join(r.value for r in roles),
                )
        raise HTTPException(401, "unknown bearer token", headers={"WWW-Authenticate": "Bearer"})

    return check
