"""The services' HTTP APIs as the console uses them: the simulator's typed clients, one set per
request (a service restarted on its address is found again), with the role's token of the
logged-in administrator for actions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Request

from services.common.settings import Settings
from services.simulator.clients import ApiError, Services

__all__ = ["ApiError", "Services", "open_services", "refusal"]


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Clients of the services for one page; closed after it."""
    services = Services(settings)
    try:
        yield services
    finally:
        await services.close()


async def services_of(request: Request) -> AsyncIterator[Services]:
    """FastAPI dependency: the services' clients for the request."""
    async with open_services(request.app.state.settings) as services:
        yield services


def refusal(exc: ApiError) -> str:
    """A refused request's reason as a person reads it: the service's own detail."""
    detail: Any = exc.detail
    if isinstance(detail, list):  # FastAPI's 422: [{"loc": [...], "msg": ...}, ...]
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc", ())[1:])
                parts.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
        detail = "; ".join(parts) or str(exc.detail)
    return f"{exc.service} refused ({exc.status}): {detail}"
