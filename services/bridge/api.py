"""The bridge's admin API: table maps and their state, queue, errors, records, activity, stats.

Every route needs the administrator's bearer token. `{map}` is a map's full name or its short
name ("invoices", "actuals"). A refused action (e.g. resume while running) answers 409 with the
reason; an unknown map, record or error 404.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError

from services.bridge import filtered_repository as filtered_repo
from services.bridge import queries
from services.bridge import repository as repo
from services.bridge.alert_rules import edit_alert_rule
from services.bridge.commands import MAPS_BY_NAME, BridgeCommands
from services.bridge.domain import (
    MapAction,
)
from services.bridge.mapping import (
    describe,
)
from services.bridge.views import (
    ActivityOut,
    AlertRuleIn,
    AlertRuleOut,
    ErrorOut,
    FilteredOut,
    InitialSyncIn,
    InitialSyncOut,
    MapOut,
    OverLimitTransactionOut,
    QueuedOut,
    QueueLimitsOut,
    QueueOut,
    QueueSummary,
    RecordOut,
    RetryAllOut,
    RetryOut,
)
from services.common.api import connection, create_app, error_responses
from services.common.auth import Role, require_role
from services.common.db import DbConnection

ADMIN = require_role(Role.ADMINISTRATOR)
# An error id is a PostgreSQL bigint: a larger one is refused as 422, not sent to the database.
ErrorId = Annotated[int, Path(ge=1, le=2**63 - 1)]
RuleId = Annotated[int, Path(ge=1, le=2**63 - 1)]
CONN = Depends(connection)


async def _known_query(request: Request) -> None:
    """Refuse (422, naming it) a query parameter the route does not declare: a misspelt
    filter (`?stauts=open`) would otherwise be ignored and answer the unfiltered list."""
    route = request.scope.get("route")
    known = {p.alias for p in getattr(getattr(route, "dependant", None), "query_params", [])}
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise RequestValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ("query", name),
                    "msg": "unknown query parameter",
                    "input": request.query_params.get(name),
                }
                for name in unknown
            ]
        )


KNOWN_QUERY = [Depends(_known_query)]


def _commands(request: Request) -> BridgeCommands:
    commands: BridgeCommands = request.app.state.commands
    return commands


async def _map_view(conn: DbConnection, row: repo.MapRow) -> MapOut:
    figures = await repo.queue_figures(conn, row.name)
    return MapOut(
        name=row.name,
        slug=row.slug,
        version=row.version,
        state=row.state,
        state_changed_at=row.state_changed_at,
        queue=QueueSummary(count=figures.count, bytes=figures.bytes, oldest=figures.oldest),
        definition=describe(MAPS_BY_NAME[row.name]),
    )


def build_app() -> FastAPI:
    app = create_app(
        "dwsim bridge",
        "Dual-write bridge admin: table maps, their state, queue, error queue, records, "
        "alert rules and activity log.",
    )
    app.include_router(_maps_router())
    app.include_router(_errors_router())
    app.include_router(_records_router())
    app.include_router(_filtered_router())
    return app


def _maps_router() -> APIRouter:
    router = APIRouter(tags=["table maps"], dependencies=[ADMIN])

    @router.get("/maps", summary="Every table map with its state, queue and field mappings")
    async def list_maps(conn: DbConnection = CONN) -> list[MapOut]:
        return [await _map_view(conn, row) for row in await repo.list_maps(conn)]

    @router.get("/maps/{map}", summary="One table map (full name or 'invoices' / 'actuals')")
    async def get_map(map: str, conn: DbConnection = CONN) -> MapOut:
        return await _map_view(conn, await repo.get_map(conn, map))

    def action_route(action: MapAction) -> None:
        async def act(map: str, request: Request, conn: DbConnection = CONN) -> MapOut:
            row = await _commands(request).change_state(map, action)
            return await _map_view(conn, row)

        router.add_api_route(
            f"/maps/{{map}}/{action.value}",
            act,
            methods=["POST"],
            response_model=MapOut,
            summary=f"{action.value.capitalize()} the map (409 with the reason when refused)",
            name=f"{action.value}_map",
        )

    for action in (MapAction.RUN, MapAction.PAUSE, MapAction.RESUME, MapAction.STOP):
        action_route(action)

    @router.post(
        "/maps/{map}/initial-sync",
        summary="Start (stopped map) or re-run (running map) the map's initial sync",
        description="Asks Dataverse for a snapshot of the map's existing rows (optionally of "
        "some legal entities only) and answers the new run; 409 while the map is paused or "
        "catching up, or (Microsoft's limits on) for more than 40 legal entities.",
        status_code=202,
    )
    async def start_initial_sync(
        map: str, request: Request, body: InitialSyncIn | None = None
    ) -> InitialSyncOut:
        run = await _commands(request).start_initial_sync(
            map, body.legal_entities if body is not None else None
        )
        return InitialSyncOut.model_validate(run.as_json())

    @router.get(
        "/maps/{map}/initial-sync",
        summary="The map's initial-sync runs, oldest first: status, direction, counts",
        responses=error_responses(404),
    )
    async def initial_sync_runs(map: str, request: Request) -> list[InitialSyncOut]:
        runs = await _commands(request).initial_sync_runs(map)
        return [InitialSyncOut.model_validate(r.as_json()) for r in runs]

    @router.get(
        "/maps/{map}/queue",
        summary="The map's paused queue: count, bytes, oldest, list",
        dependencies=KNOWN_QUERY,
    )
    async def queue(
        map: str,
        request: Request,
        limit: int = Query(100, ge=1, le=10_000),
        conn: DbConnection = CONN,
    ) -> QueueOut:
        row = await repo.get_map(conn, map)
        figures = await repo.queue_figures(conn, row.name)
        head = await repo.queue_head(conn, row.name, limit)
        limits = _commands(request).intake.limits
        return QueueOut(
            map=row.name,
            state=row.state,
            limits=QueueLimitsOut(
                max_age_s=limits.max_age.total_seconds(),
                max_bytes=limits.max_size_bytes,
                max_count=limits.max_count,
            ),
            count=figures.count,
            bytes=figures.bytes,
            oldest=figures.oldest,
            records=[
                QueuedOut(
                    position=i + 1,
                    record_id=q.record.record_id,
                    record_key=q.record.record_key,
                    invoice_id=q.record.invoice_id,
                    leg=q.record.leg_name,
                    bytes=q.bytes,
                    queued_at=q.queued_at,
                )
                for i, q in enumerate(head)
            ],
        )

    @router.get(
        "/activity",
        summary="Activity log, newest first",
        responses=error_responses(404),
        dependencies=KNOWN_QUERY,
    )
    async def activity(
        map: str | None = None,
        kind: str | None = None,
        limit: int = Query(100, ge=1, le=10_000),
        conn: DbConnection = CONN,
    ) -> list[ActivityOut]:
        name = None if map is None else (await repo.get_map(conn, map)).name
        rows = await queries.list_activity(conn, map_name=name, kind=kind, limit=limit)
        return [ActivityOut.model_validate(r) for r in rows]

    @router.get(
        "/stats",
        summary="Per map: forwarded, filtered, one-way violations, by status, and source "
        "transactions past Microsoft's limits (failed / would fail in production)",
    )
    async def stats(conn: DbConnection = CONN) -> dict[str, dict[str, int]]:
        return await queries.stats(conn)

    @router.get(
        "/platform-limits",
        summary="Source transactions past Microsoft's live-sync limits, per map, oldest first",
    )
    async def platform_limits(conn: DbConnection = CONN) -> list[OverLimitTransactionOut]:
        rows = await queries.over_limit_transactions(conn)
        return [OverLimitTransactionOut.model_validate(r) for r in rows]

    @router.get("/alert-rules", summary="Alert rules: error type, count, window, action")
    async def alert_rules(conn: DbConnection = CONN) -> list[AlertRuleOut]:
        return [AlertRuleOut.model_validate(r) for r in await queries.list_alert_rules(conn)]

    @router.put(
        "/alert-rules/{rule_id}",
        summary="Change an alert rule's error type, count, window and action",
        description="422 when a value makes no sense (nothing changes); 409 when the map has "
        "a rule with these values already. The change is written to the map's activity log.",
        response_model=AlertRuleOut,
    )
    async def put_alert_rule(
        rule_id: RuleId, body: AlertRuleIn, conn: DbConnection = CONN
    ) -> dict[str, Any]:
        return await edit_alert_rule(
            conn,
            rule_id,
            error_type=body.error_type,
            count=body.count,
            window=timedelta(seconds=body.window_s),
            action=body.action,
        )

    return router


def _errors_router() -> APIRouter:
    router = APIRouter(prefix="/errors", tags=["error queue"], dependencies=[ADMIN])

    @router.get(
        "",
        summary="Error queue (catch_up=true: the catch-up error list)",
        responses=error_responses(404),
        dependencies=KNOWN_QUERY,
    )
    async def list_errors(
        map: str | None = None,
        catch_up: bool | None = None,
        status: str | None = Query(None, pattern="^(open|retried|resolved)$"),
        conn: DbConnection = CONN,
    ) -> list[ErrorOut]:
        name = None if map is None else (await repo.get_map(conn, map)).name
        rows = await queries.list_errors(conn, map_name=name, catch_up=catch_up, status=status)
        return [ErrorOut.model_validate(r) for r in rows]

    @router.post(
        "/retry-all",
        summary="Retry every open error (optionally of one map)",
        responses=error_responses(404),
        dependencies=KNOWN_QUERY,
        response_model_exclude_unset=True,
    )
    async def retry_all(
        request: Request,
        map: str | None = None,
        catch_up: bool | None = None,
        conn: DbConnection = CONN,
    ) -> RetryAllOut:
        name = None if map is None else (await repo.get_map(conn, map)).name
        open_errors = await queries.list_errors(
            conn, map_name=name, catch_up=catch_up, status="open"
        )
        ids = [e["id"] for e in open_errors if e["record_id"] is not None]
        results = await _commands(request).retry_errors(ids)
        return RetryAllOut(
            retried=len(results), results=[RetryOut.model_validate(r) for r in results]
        )

    @router.post(
        "/{error_id}/retry",
        summary="Retry the record behind one error",
        response_model_exclude_unset=True,
    )
    async def retry(error_id: ErrorId, request: Request) -> RetryOut:
        results = await _commands(request).retry_errors([error_id])
        return RetryOut.model_validate(results[0])

    return router


def _records_router() -> APIRouter:
    router = APIRouter(prefix="/records", tags=["records"], dependencies=[ADMIN])

    @router.get(
        "",
        summary="Per-record sync status, by invoice id, status or map",
        responses=error_responses(404),
        dependencies=KNOWN_QUERY,
    )
    async def list_records(
        invoice_id: str | None = None,
        status: str | None = Query(
            None,
            pattern="^(pending|synced|failed|queued|filtered|not_synced)$",
            description="filtered: stored records left out later (superseded by an initial "
            "sync, or re-mapped into the filter); rows filtered on arrival leave no record "
            "and are counted at /filtered",
        ),
        map: str | None = None,
        limit: int = Query(1000, ge=1, le=100_000),
        conn: DbConnection = CONN,
    ) -> list[RecordOut]:
        name = None if map is None else (await repo.get_map(conn, map)).name
        rows = await queries.list_records(
            conn, invoice_id=invoice_id, status=status, map_name=name, limit=limit
        )
        return [RecordOut.model_validate(r) for r in rows]

    @router.get("/{record_id}", summary="One record: status, reason, attempts, payloads")
    async def get_record(record_id: UUID, conn: DbConnection = CONN) -> RecordOut:
        return RecordOut.model_validate(await queries.record_row(conn, record_id))

    return router


def _filtered_router() -> APIRouter:
    router = APIRouter(prefix="/filtered", tags=["records"], dependencies=[ADMIN])

    @router.get(
        "",
        summary="Filtered source rows, counted per map, leg, invoice and reason, oldest first",
        responses=error_responses(404),
        dependencies=KNOWN_QUERY,
    )
    async def list_filtered(
        invoice_id: str | None = None,
        map: str | None = None,
        limit: int = Query(1000, ge=1, le=100_000),
        conn: DbConnection = CONN,
    ) -> list[FilteredOut]:
        name = None if map is None else (await repo.get_map(conn, map)).name
        rows = await filtered_repo.list_counts(
            conn, map_name=name, invoice_id=invoice_id, limit=limit
        )
        return [FilteredOut.model_validate(r) for r in rows]

    return router
