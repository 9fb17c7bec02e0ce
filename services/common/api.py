"""What every service's HTTP API shares: app factory, error mapping, health, parked events."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.auth import Role, require_role
from services.common.db import (
    CONNECTION_LOST_ERRORS,
    DbConnection,
    connection_lost,
    database_status,
)
from services.common.logging import get_logger
from services.common.outbox import unpublished_count

log = get_logger(__name__)


# Transactions that lost a race to another one: PostgreSQL rolled them back, and running the
# request again is the answer (a consumer batch and an API call that lock the same rows in
# different orders, say).
_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)


class RetryOnConflict:
    """ASGI middleware: runs a request again when its transaction lost a deadlock or a
    serialization conflict, up to `attempts` times, before any of its response was sent."""

    def __init__(self, app: ASGIApp, attempts: int = 5) -> None:
        self.app = app
        self.attempts = attempts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        for attempt in range(self.attempts):
            delivered = False
            started = False

            async def replay() -> Message:
                nonlocal delivered
                if delivered:
                    return await receive()
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}

            async def tracked(message: Message) -> None:
                nonlocal started
                started = True
                await send(message)

            try:
                await self.app(scope, replay, tracked)
                return
            except _RETRYABLE as exc:
                if started or attempt == self.attempts - 1:
                    raise
                log.info(
                    "request_retried_after_conflict",
                    path=scope.get("path"),
                    error=type(exc).__name__,
                    attempt=attempt + 1,
                )
                await asyncio.sleep(0.01 * 2**attempt)


def create_app(title: str, description: str, rule_errors: tuple[type[Exception], ...]) -> FastAPI:
    """A FastAPI app with /health, parked events, and rule errors answered as 409."""
    app = FastAPI(title=title, description=description, version="0.1.0")
    app.add_middleware(RetryOnConflict)

    async def conflict(_: Request, exc: Exception) -> JSONResponse:
        # An illegal transition is the caller's error; the message names the rule.
        return JSONResponse(
            status_code=409, content={"detail": str(exc), "rule": type(exc).__name__}
        )

    async def not_found(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc).strip("'\"")})

    for error in rule_errors:
        app.add_exception_handler(error, conflict)
    app.add_exception_handler(LookupError, not_found)
    # Not the lost races: RetryOnConflict runs those requests again.
    for error in CONNECTION_LOST_ERRORS:
        app.add_exception_handler(error, _database_unavailable)
    app.include_router(_health_router())
    app.include_router(_parked_router())
    app.include_router(_outbox_router())
    return app


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A request that met a lost or refused database connection: 503, try again, not 500.
    Also how `/health` answers while the database is away."""
    if not connection_lost(exc):
        # A call asyncpg refused (a parameter it cannot encode): a server error, as before.
        log.error("request_failed", path=request.url.path, error=repr(exc))
        return JSONResponse(status_code=500, content={"detail": "Internal Server Error"})
    pool = getattr(request.app.state, "pool", None)
    state: dict[str, Any] = {"state": "down"}
    if pool is not None:
        status = database_status(pool)
        status.failed(exc, f"{request.method} {request.url.path}")
        state = {"state": "down", "since": status.since.isoformat()}
    return JSONResponse(
        status_code=503,
        content={"detail": "the database is unavailable; try again", "database_connection": state},
        headers={"Retry-After": "1"},
    )


async def connection(request: Request) -> Any:
    """FastAPI dependency: a pooled connection for the request."""
    pool: asyncpg.Pool = request.app.state.pool
    async with pool.acquire() as conn:
        yield conn


def _health_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/health", summary="Is the service up, and how are its relay and consumer")
    async def health(request: Request, conn: DbConnection = Depends(connection)) -> dict[str, Any]:  # noqa: B008
        state = request.app.state
        relay = getattr(state, "relay", None)
        consumer = getattr(state, "consumer", None)
        return {
            "service": state.service_name,
            "status": "ok",
            "database": await conn.fetchval("SELECT current_database()"),
            "outbox": {
                "unpublished": await unpublished_count(conn),
                "published": relay.published if relay else 0,
                "last_error": relay.last_error if relay else None,
            },
            "consumer": consumer.stats.__dict__ if consumer else None,
            "parked_events": await conn.fetchval("SELECT count(*) FROM dwsim_parked_event"),
            "database_connection": database_status(state.pool).as_dict(),
        }

    return router


def _parked_router() -> APIRouter:
    router = APIRouter(prefix="/parked-events", tags=["parked events"])
    admin = Depends(require_role(Role.ADMINISTRATOR, Role.ACCOUNTANT, Role.PROJECT_MANAGER))

    @router.get("", summary="Events whose handler failed, with the reason", dependencies=[admin])
    async def list_parked(conn: DbConnection = Depends(connection)) -> list[dict[str, Any]]:  # noqa: B008
        rows = await conn.fetch(
            "SELECT event_id, topic, key, event_type, correlation_id, reason, parked_at, "
            "attempts FROM dwsim_parked_event ORDER BY parked_at"
        )
        return [dict(r) for r in rows]

    @router.post("/{event_id}/retry", summary="Apply a parked event again", dependencies=[admin])
    async def retry(event_id: UUID, request: Request) -> dict[str, Any]:
        consumer = getattr(request.app.state, "consumer", None)
        if consumer is None:
            raise HTTPException(409, "this service has no consumer")
        applied = await consumer.retry_parked(event_id)
        return {"event_id": str(event_id), "applied": applied}

    return router


def _outbox_router() -> APIRouter:
    router = APIRouter(prefix="/outbox", tags=["outbox"])
    admin = Depends(require_role(Role.ADMINISTRATOR))

    @router.post(
        "/replay",
        summary="Publish again the events published since a moment",
        description=(
            "For a broker that lost its log (the local broker keeps it in memory): the events "
            "published at or after `since` are marked unpublished, and the relay sends them "
            "again with their original event ids, so consumers that had them skip them and "
            "the others apply them. Like Finance's 'push again' of out-of-sync actuals."
        ),
        dependencies=[admin],
    )
    async def replay(since: datetime, conn: DbConnection = Depends(connection)) -> dict[str, Any]:  # noqa: B008
        if since.tzinfo is None:
            raise HTTPException(422, "since: give a timezone, e.g. 2026-11-01T10:00:00Z")
        status = await conn.execute(
            "UPDATE dwsim_outbox SET published_at = NULL WHERE published_at >= $1", since
        )
        await conn.execute("SELECT pg_notify('dwsim_outbox', '')")
        return {"replayed": int(status.split()[-1])}

    return router
