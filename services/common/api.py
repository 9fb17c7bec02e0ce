"""What every service's HTTP API shares: app factory, error mapping, health, parked events."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import asyncpg
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import AwareDatetime, BaseModel, BeforeValidator, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common import tracing
from services.common.auth import Role, bearer, require_role, role_of
from services.common.db import (
    CONNECTION_LOST_ERRORS,
    DbConnection,
    connection_lost,
    database_status,
)
from services.common.errors import ConsumerNotReady, NotFound, RuleError
from services.common.logging import get_logger
from services.common.metrics import CONTENT_TYPE, HttpMetrics, ServiceMetrics
from services.common.outbox import parked_rows, unpublished_count

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


class TraceRequests:
    """ASGI middleware: each request's work continues the caller's W3C `traceparent` (a child
    span of it), else starts a local root that may resume the trace of the invoice it acts on
    (services/common/tracing.py). The response names the request's span in `traceparent`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        parent = None
        for name, value in scope.get("headers", ()):
            if name == b"traceparent":
                parent = tracing.parse_traceparent(value)
                break
        with tracing.continued(parent, f"{scope['method']} {scope['path']}") as started:
            answer = started.current.traceparent.encode()

            async def traced(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message = {
                        **message,
                        "headers": [*message.get("headers", ()), (b"traceparent", answer)],
                    }
                await send(message)

            await self.app(scope, receive, traced)


class ErrorOut(BaseModel):
    """A refused request: the reason, and the rule that refused it when a rule did."""

    detail: str
    rule: str | None = None


class OutboxFigures(BaseModel):
    """The outbox relay as /health shows it."""

    unpublished: int = Field(description="rows waiting for the relay")
    published: int = Field(description="rows this process published since it started")
    # Optional fields are left out when None (/health excludes them): absent = no failure.
    last_error: str | None = Field(default=None, description="the relay's last failure")
    parked: int = Field(description="rows too large to publish, kept with their reason")


class ConsumerFigures(BaseModel):
    """The consumer loop as /health shows it (counters since the process started)."""

    applied: int
    duplicates: int
    dead_lettered: int
    parked: int
    last_error: str | None = None
    assigned: list[str] = Field(description="topic:partition pairs this process consumes")


class DatabaseConnectionOut(BaseModel):
    """Whether the process reaches its database, as its workers last found."""

    state: Literal["up", "down"]
    since: datetime
    last_error: str | None = None
    last_error_at: datetime | None = None
    failed_attempts: int
    outages: int


class HealthOut(BaseModel):
    """Up to anyone; the figures only with a role's token."""

    service: str
    status: Literal["ok"]
    database: str | None = Field(default=None, description="the service's database (token)")
    outbox: OutboxFigures | None = None
    consumer: ConsumerFigures | None = None
    parked_events: int | None = Field(default=None, description="events parked with a reason")
    database_connection: DatabaseConnectionOut | None = None


class ParkedEventOut(BaseModel):
    """An event whose handler failed, kept with its reason until it is retried."""

    event_id: UUID
    topic: str
    key: str | None
    event_type: str
    correlation_id: str | None
    reason: str
    parked_at: datetime
    attempts: int


class RetriedOut(BaseModel):
    """A parked event applied again: `applied` false means it failed again (reason updated)."""

    event_id: UUID
    applied: bool


class ReplayedOut(BaseModel):
    """How many published events were marked for the relay to send again."""

    replayed: int


class RewoundOut(BaseModel):
    """The partitions this instance's consumer will read again from their beginning."""

    rewound: list[str]


class OutboxParkedOut(BaseModel):
    """An outbox row that can never be published (larger than the broker accepts)."""

    id: int
    event_id: UUID
    topic: str
    key: str | None
    event_type: str
    correlation_id: str | None
    size: int
    reason: str
    created_at: datetime
    parked_at: datetime


_ERRORS = {
    400: "The body is not JSON",
    401: "No bearer token, or an unknown one",
    403: "The token's role may not call this operation",
    404: "An id or name that does not exist",
    409: "Refused by a rule (the detail says which); nothing was written",
    503: "Not ready yet (the detail says what); try again after Retry-After",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` of refusals an operation can answer (see `create_app`, which adds
    400 to every operation with a body, 401/403 to every one behind a role, 404 to every one
    with a path id and to writes, 409 to writes): for a route that answers one of them in
    another case, e.g. a read whose query names a map that may not exist."""
    return {code: {"model": ErrorOut, "description": _ERRORS[code]} for code in codes}


def _declare_refusals(app: FastAPI) -> None:
    """Make the OpenAPI page declare the refusals the shared machinery answers everywhere: a
    body that is not JSON (400), a role check's 401 and 403, an unknown id's 404, a rule's
    409 on writes."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        error = ErrorOut.model_json_schema()
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                codes = []
                if "requestBody" in operation:
                    codes.append(400)
                if operation.get("security"):
                    codes += [401, 403]
                # A write names what it acts on (in the path or the body), and may name
                # something that does not exist.
                if "{" in path or method != "get":
                    codes.append(404)
                if method != "get":
                    codes.append(409)
                responses = operation.setdefault("responses", {})
                for code in codes:
                    responses.setdefault(
                        str(code),
                        {
                            "description": _ERRORS[code],
                            "content": {"application/json": {"schema": error}},
                        },
                    )
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _nul_locations(value: Any, loc: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    if isinstance(value, str):
        if "\x00" in value:
            yield loc
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                yield (*loc, key)
            yield from _nul_locations(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nul_locations(item, (*loc, index))


async def refuse_nul(request: Request) -> None:
    """422 naming the field for a NUL character in any path, query or body text.

    PostgreSQL's text types cannot hold NUL (asyncpg raises CharacterNotInRepertoireError,
    a 500), and no name, id or code in this domain has one. Checked once for every route of
    every service, rather than on each text field.
    """
    where: list[tuple[str | int, ...]] = [
        ("path", name)
        for name, value in request.path_params.items()
        if isinstance(value, str) and "\x00" in value
    ]
    where += [
        ("query", name) for name, value in request.query_params.multi_items() if "\x00" in value
    ]
    body = await request.body()
    # JSON carries NUL only escaped (a raw control character is invalid JSON, refused anyway).
    if b"\\u0000" in body:
        try:
            document = json.loads(body)
        except ValueError:
            document = None  # not JSON: FastAPI's own validation answers
        where += [("body", *loc) for loc in _nul_locations(document)]
    if where:
        raise RequestValidationError(
            [
                {
                    "type": "string_nul",
                    "loc": loc,
                    "msg": "text may not contain the NUL character (\\u0000)",
                    "input": None,
                }
                for loc in where
            ]
        )


def create_app(title: str, description: str) -> FastAPI:
    """A FastAPI app with /health, parked events, rule errors answered as 409, records not
    found as 404, text with NUL
    refused with 422, and the refusals every route can answer declared in its OpenAPI page."""
    app = FastAPI(
        title=title,
        description=description,
        version="0.1.0",
        dependencies=[Depends(refuse_nul)],
    )
    app.add_middleware(RetryOnConflict)
    # Outermost, so that a request run again after a conflict counts once, with its answer.
    app.add_middleware(HttpMetrics)
    app.add_middleware(TraceRequests)
    _declare_refusals(app)

    async def conflict(_: Request, exc: Exception) -> JSONResponse:
        # An illegal transition is the caller's error; the message names the rule.
        return JSONResponse(
            status_code=409, content={"detail": str(exc), "rule": type(exc).__name__}
        )

    async def not_found(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc).strip("'\"")})

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        if getattr(exc, "status_code", None) != 405:
            return await http_exception_handler(request, exc)  # type: ignore[arg-type]
        # Starlette's Allow names the methods of the first route that matched the path only;
        # several routes share a path here (GET and PUT of one legal entity, say).
        paths = app.openapi()["paths"]
        path = request.url.path
        # A path of its own (`/actuals/ready`) is not also `/actuals/{actual_id}`'s.
        templates = (
            [path]
            if path in paths
            else [t for t in paths if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", t), path)]
        )
        allowed = sorted(method.upper() for t in templates for method in paths[t])
        return JSONResponse(
            status_code=405,
            content={"detail": "Method Not Allowed"},
            headers={"Allow": ", ".join(allowed)},
        )

    app.add_exception_handler(StarletteHTTPException, method_not_allowed)
    app.add_exception_handler(RuleError, conflict)
    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(ConsumerNotReady, _not_ready)
    # Not the lost races: RetryOnConflict runs those requests again.
    for error in CONNECTION_LOST_ERRORS:
        app.add_exception_handler(error, _database_unavailable)
    app.include_router(_health_router())
    app.include_router(_parked_router())
    app.include_router(_outbox_router())
    app.include_router(_consumer_router())
    app.include_router(_metrics_router())
    return app


async def _not_ready(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=503, content={"detail": str(exc)}, headers={"Retry-After": "2"})


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

    @router.get(
        "/health",
        summary="Is the service up; with any role's token, how are its relay and consumer",
        response_model=HealthOut,
        response_model_exclude_none=True,
        # The token is optional here: `{}` is "no security" among the alternatives.
        openapi_extra={"security": [{}, {"HTTPBearer": []}]},
    )
    async def health(
        request: Request,
        conn: DbConnection = Depends(connection),  # noqa: B008
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> dict[str, Any]:
        state = request.app.state
        answer: dict[str, Any] = {"service": state.service_name, "status": "ok"}
        if role_of(state.settings, credentials) is None:
            # Up or down for anyone (a load balancer, a script); the database's name, the
            # outbox and the consumer's last error only for the service's users.
            return answer
        relay = getattr(state, "relay", None)
        consumer = getattr(state, "consumer", None)
        return {
            **answer,
            "database": await conn.fetchval("SELECT current_database()"),
            "outbox": {
                "unpublished": await unpublished_count(conn),
                "published": relay.published if relay else 0,
                "last_error": relay.last_error if relay else None,
                # Rows too large to publish, kept with their reason (GET /outbox/parked).
                "parked": await conn.fetchval("SELECT count(*) FROM dwsim_outbox_parked"),
            },
            "consumer": consumer.stats.__dict__ if consumer else None,
            "parked_events": await conn.fetchval("SELECT count(*) FROM dwsim_parked_event"),
            "database_connection": database_status(state.pool).as_dict(),
        }

    return router


def _metrics_router() -> APIRouter:
    router = APIRouter(tags=["metrics"])

    @router.get(
        "/metrics",
        summary="Prometheus metrics of this process",
        description=(
            "Counts, durations and backlogs in Prometheus' text format (docs/metrics.md), "
            "for a Prometheus to scrape: no token, and no business data (labels are topics, "
            "partitions, routes, maps and statuses only)."
        ),
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}},
    )
    async def metrics(request: Request) -> Response:
        registry: ServiceMetrics | None = getattr(request.app.state, "metrics", None)
        if registry is None:
            raise HTTPException(503, "the service is starting: no metrics yet")
        return Response(await registry.render(), media_type=CONTENT_TYPE)

    return router


def _parked_router() -> APIRouter:
    router = APIRouter(prefix="/parked-events", tags=["parked events"])
    # The administrator's only: applying a parked event again acts on the service's data
    # as its consumer, whichever side sent it; a project manager must not retry Finance's
    # events, and an accountant Dataverse's (issue 18).
    admin = require_role(Role.ADMINISTRATOR)

    @router.get(
        "",
        summary="Events whose handler failed, with the reason",
        dependencies=[admin],
        response_model=list[ParkedEventOut],
    )
    async def list_parked(conn: DbConnection = Depends(connection)) -> list[dict[str, Any]]:  # noqa: B008
        rows = await conn.fetch(
            "SELECT event_id, topic, key, event_type, correlation_id, reason, parked_at, "
            "attempts FROM dwsim_parked_event ORDER BY parked_at"
        )
        return [dict(r) for r in rows]

    @router.post(
        "/{event_id}/retry",
        summary="Apply a parked event again",
        dependencies=[admin],
        response_model=RetriedOut,
    )
    async def retry(event_id: UUID, request: Request) -> dict[str, Any]:
        consumer = getattr(request.app.state, "consumer", None)
        if consumer is None:
            raise HTTPException(409, "this service has no consumer")
        applied = await consumer.retry_parked(event_id)
        return {"event_id": str(event_id), "applied": applied}

    return router


def _date_time_text(value: Any) -> Any:
    # Pydantic reads a number as Unix time; the page promises an RFC 3339 date-time.
    if isinstance(value, str) and not re.match(r"^\d{4}-\d{2}-\d{2}", value):
        raise ValueError("give a date-time with a timezone, e.g. 2026-11-01T10:00:00Z")
    return value


Since = Annotated[AwareDatetime, BeforeValidator(_date_time_text)]


def _consumer_router() -> APIRouter:
    router = APIRouter(prefix="/consumer", tags=["consumer"])

    @router.post(
        "/rewind",
        summary="Read every consumed partition again from its beginning",
        description=(
            "For a broker that lost its log (the local broker keeps it in memory), before "
            "`/outbox/replay`: the consumer still holds positions of the old log, and events "
            "published again on the new log could land below them and be skipped. Each "
            "partition this instance holds is read again from its beginning, and that is "
            "committed as the group's position; the inbox skips what was applied. What an "
            "operator does with `kafka-consumer-groups --reset-offsets --to-earliest`."
        ),
        dependencies=[require_role(Role.ADMINISTRATOR)],
        response_model=RewoundOut,
        responses=error_responses(503),
    )
    async def rewind(request: Request) -> dict[str, Any]:
        rewind = getattr(request.app.state, "rewind", None)
        if rewind is None:
            raise HTTPException(409, "this service has no consumer")
        return {"rewound": await rewind()}

    return router


def _outbox_router() -> APIRouter:
    router = APIRouter(prefix="/outbox", tags=["outbox"])
    admin = require_role(Role.ADMINISTRATOR)

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
        response_model=ReplayedOut,
    )
    async def replay(since: Since, conn: DbConnection = Depends(connection)) -> dict[str, Any]:  # noqa: B008
        status = await conn.execute(
            "UPDATE dwsim_outbox SET published_at = NULL WHERE published_at >= $1", since
        )
        await conn.execute("SELECT pg_notify('dwsim_outbox', '')")
        return {"replayed": int(status.split()[-1])}

    @router.get(
        "/parked",
        summary="Events that can never be published, with the reason",
        description=(
            "Outbox rows larger than the broker accepts (`max_message_bytes`): the relay "
            "parks them instead of retrying them forever, and publishes the rows after them."
        ),
        dependencies=[admin],
        response_model=list[OutboxParkedOut],
    )
    async def parked(conn: DbConnection = Depends(connection)) -> list[dict[str, Any]]:  # noqa: B008
        return await parked_rows(conn)

    return router
