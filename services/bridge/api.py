"""The bridge's admin API: table maps and their state, queue, errors, records, activity, stats.

Every route needs the administrator's bearer token. `{map}` is a map's full name or its short
name ("invoices", "actuals"). A refused action (e.g. resume while running) answers 409 with the
reason; an unknown map, record or error 404.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request

from services.bridge import repository as repo
from services.bridge.commands import MAPS_BY_NAME, BridgeCommands
from services.bridge.domain import MapAction, describe
from services.common.api import connection, create_app, error_responses
from services.common.auth import Role, require_role
from services.common.db import DbConnection

ADMIN = require_role(Role.ADMINISTRATOR)
# An error id is a PostgreSQL bigint: a larger one is refused as 422, not sent to the database.
ErrorId = Annotated[int, Path(ge=1, le=2**63 - 1)]
CONN = Depends(connection)


def _commands(request: Request) -> BridgeCommands:
    commands: BridgeCommands = request.app.state.commands
    return commands


async def _map_view(conn: DbConnection, row: repo.MapRow) -> dict[str, Any]:
    figures = await repo.queue_figures(conn, row.name)
    return {
        "name": row.name,
        "slug": row.slug,
        "version": row.version,
        "state": row.state.value,
        "state_changed_at": row.state_changed_at,
        "queue": {"count": figures.count, "bytes": figures.bytes, "oldest": figures.oldest},
        "definition": describe(MAPS_BY_NAME[row.name]),
    }


def build_app() -> FastAPI:
    app = create_app(
        "dwsim bridge",
        "Dual-write bridge admin: table maps, their state, queue, error queue, records, "
        "alert rules and activity log.",
    )
    app.include_router(_maps_router())
    app.include_router(_errors_router())
    app.include_router(_records_router())
    return app


def _maps_router() -> APIRouter:
    router = APIRouter(tags=["table maps"], dependencies=[ADMIN])

    @router.get("/maps", summary="Every table map with its state, queue and field mappings")
    async def list_maps(conn: DbConnection = CONN) -> list[dict[str, Any]]:
        return [await _map_view(conn, row) for row in await repo.list_maps(conn)]

    @router.get("/maps/{map}", summary="One table map (full name or 'invoices' / 'actuals')")
    async def get_map(map: str, conn: DbConnection = CONN) -> dict[str, Any]:
        return await _map_view(conn, await repo.get_map(conn, map))

    def action_route(action: MapAction) -> None:
        async def act(map: str, request: Request, conn: DbConnection = CONN) -> dict[str, Any]:
            row = await _commands(request).change_state(map, action)
            return await _map_view(conn, row)

        router.add_api_route(
            f"/maps/{{map}}/{action.value}",
            act,
            methods=["POST"],
            summary=f"{action.value.capitalize()} the map (409 with the reason when refused)",
            name=f"{action.value}_map",
        )

    for action in (MapAction.RUN, MapAction.PAUSE, MapAction.RESUME, MapAction.STOP):
        action_route(action)

    @router.get("/maps/{map}/queue", summary="The map's paused queue: count, bytes, oldest, list")
    async def queue(
        map: str, limit: int = Query(100, ge=1, le=10_000), conn: DbConnection = CONN
    ) -> dict[str, Any]:
        row = await repo.get_map(conn, map)
        figures = await repo.queue_figures(conn, row.name)
        head = await repo.queue_head(conn, row.name, limit)
        return {
            "map": row.name,
            "state": row.state.value,
            "count": figures.count,
            "bytes": figures.bytes,
            "oldest": figures.oldest,
            "records": [
                {
                    "position": i + 1,
                    "record_id": q.record.record_id,
                    "record_key": q.record.record_key,
                    "invoice_id": q.record.invoice_id,
                    "leg": q.record.leg_name,
                    "bytes": q.bytes,
                    "queued_at": q.queued_at,
                }
                for i, q in enumerate(head)
            ],
        }

    @router.get("/activity", summary="Activity log, newest first", responses=error_responses(404))
    async def activity(
        map: str | None = None,
        kind: str | None = None,
        limit: int = Query(100, ge=1, le=10_000),
        conn: DbConnection = CONN,
    ) -> list[dict[str, Any]]:
        name = None if map is None else (await repo.get_map(conn, map)).name
        return await repo.list_activity(conn, map_name=name, kind=kind, limit=limit)

    @router.get("/stats", summary="Per map: forwarded, filtered, one-way violations, by status")
    async def stats(conn: DbConnection = CONN) -> dict[str, dict[str, int]]:
        return await repo.stats(conn)

    @router.get("/alert-rules", summary="Alert rules: error type, count, window, action")
    async def alert_rules(conn: DbConnection = CONN) -> list[dict[str, Any]]:
        return await repo.list_alert_rules(conn)

    return router


def _errors_router() -> APIRouter:
    router = APIRouter(prefix="/errors", tags=["error queue"], dependencies=[ADMIN])

    @router.get(
        "",
        summary="Error queue (catch_up=true: the catch-up error list)",
        responses=error_responses(404),
    )
    async def list_errors(
        map: str | None = None,
        catch_up: bool | None = None,
        status: str | None = Query(None, pattern="^(open|retried|resolved)$"),
        conn: DbConnection = CONN,
    ) -> list[dict[str, Any]]:
        name = None if map is None else (await repo.get_map(conn, map)).name
        return await repo.list_errors(conn, map_name=name, catch_up=catch_up, status=status)

    @router.post(
        "/retry-all",
        summary="Retry every open error (optionally of one map)",
        responses=error_responses(404),
    )
    async def retry_all(
        request: Request,
        map: str | None = None,
        catch_up: bool | None = None,
        conn: DbConnection = CONN,
    ) -> dict[str, Any]:
        name = None if map is None else (await repo.get_map(conn, map)).name
        open_errors = await repo.list_errors(conn, map_name=name, catch_up=catch_up, status="open")
        ids = [e["id"] for e in open_errors if e["record_id"] is not None]
        results = await _commands(request).retry_errors(ids)
        return {"retried": len(results), "results": results}

    @router.post("/{error_id}/retry", summary="Retry the record behind one error")
    async def retry(error_id: ErrorId, request: Request) -> dict[str, Any]:
        results = await _commands(request).retry_errors([error_id])
        return results[0]

    return router


def _records_router() -> APIRouter:
    router = APIRouter(prefix="/records", tags=["records"], dependencies=[ADMIN])

    @router.get(
        "",
        summary="Per-record sync status, by invoice id, status or map",
        responses=error_responses(404),
    )
    async def list_records(
        invoice_id: str | None = None,
        status: str | None = Query(
            None, pattern="^(pending|synced|failed|queued|filtered|not_synced)$"
        ),
        map: str | None = None,
        limit: int = Query(1000, ge=1, le=100_000),
        conn: DbConnection = CONN,
    ) -> list[dict[str, Any]]:
        name = None if map is None else (await repo.get_map(conn, map)).name
        return await repo.list_records(
            conn, invoice_id=invoice_id, status=status, map_name=name, limit=limit
        )

    @router.get("/{record_id}", summary="One record: status, reason, attempts, payloads")
    async def get_record(record_id: UUID, conn: DbConnection = CONN) -> dict[str, Any]:
        return await repo.record_row(conn, record_id)

    return router
