"""Table maps (dual-write's list page) and one map with its tabs: field mappings, activity
log, queued records, error queue and alert rules; the administrator's actions on them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from services.bridge.domain import TRANSITIONS, AlertAction, ErrorType, MapAction, MapState
from services.console.access import Session, action_form, viewer
from services.console.apis import ApiError, Services, refusal, services_of
from services.console.pages import render

# The administrator's actions, in the order the admin page shows its buttons.
ACTIONS: tuple[MapAction, ...] = (MapAction.RUN, MapAction.PAUSE, MapAction.RESUME, MapAction.STOP)
TABS: tuple[tuple[str, str], ...] = (
    ("mappings", "Field mappings"),
    ("activity", "Activity log"),
    ("queue", "Queued records"),
    ("errors", "Error queue"),
    ("alerts", "Alert rules"),
)
ERROR_STATUSES = ("open", "retried", "resolved")
VIEWER = Depends(viewer)
SERVICES = Depends(services_of)


def allowed_actions(state: str) -> list[MapAction]:
    """The actions the bridge allows from `state` (its own transition table), so a page shows
    exactly the buttons that can succeed."""
    return [a for a in ACTIONS if TRANSITIONS[a][0].value == state]


async def maps_with_counts(services: Services) -> list[dict[str, Any]]:
    """Every map with its queue, per-status counts, open errors and last activity."""
    maps, stats, errors = await asyncio.gather(
        services.bridge.get("/maps"),
        services.bridge.get("/stats"),
        services.bridge.get("/errors", status="open"),
    )
    last = await asyncio.gather(
        *(services.bridge.get("/activity", map=m["slug"], limit=1) for m in maps)
    )
    return [
        {
            **m,
            "counts": stats.get(m["name"], {}),
            "open_errors": sum(1 for e in errors if e.get("map_name") == m["name"]),
            "last_activity": entries[0] if entries else None,
            "actions": allowed_actions(m["state"]),
            "direction": ", ".join(sorted({leg["direction"] for leg in m["definition"]["legs"]})),
        }
        for m, entries in zip(maps, last, strict=True)
    ]


def _back(request: Request, fallback: str) -> str:
    # Back to the page the form was on (same site only: SameSite=Strict sends no cookie
    # otherwise), else to `fallback`.
    referer = request.headers.get("referer", "")
    base = str(request.base_url)
    return "/" + referer[len(base) :] if referer.startswith(base) else fallback


def router() -> APIRouter:
    """The maps pages and their actions."""
    routes = APIRouter()

    @routes.get("/maps")
    async def maps(
        request: Request, session: Session = VIEWER, services: Services = SERVICES
    ) -> Response:
        return render(request, "maps.html", session, maps=await maps_with_counts(services))

    @routes.get("/maps/{slug}")
    async def one_map(
        request: Request,
        slug: str,
        tab: str = "mappings",
        kind: str | None = None,
        status: str | None = None,
        catch_up: str | None = None,
        session: Session = VIEWER,
        services: Services = SERVICES,
    ) -> Response:
        if tab not in dict(TABS):
            tab = "mappings"
        table_map = await services.bridge.get(f"/maps/{slug}")
        context: dict[str, Any] = {
            "map": table_map,
            "actions": allowed_actions(table_map["state"]),
            "tabs": TABS,
            "tab": tab,
        }
        if tab == "activity":
            everything = await services.bridge.get("/activity", map=slug, limit=1000)
            context["kinds"] = sorted({e["kind"] for e in everything})
            context["kind"] = kind or ""
            context["activity"] = (
                await services.bridge.get("/activity", map=slug, kind=kind, limit=500)
                if kind
                else everything[:500]
            )
        elif tab == "queue":
            queue = await services.bridge.get(f"/maps/{slug}/queue", limit=500)
            queue["oldest_age_s"] = _age_s(queue.get("oldest"))
            context["queue"] = queue
        elif tab == "errors":
            wanted = status if status in ERROR_STATUSES else None
            only_catch_up = True if catch_up == "1" else None
            context.update(
                errors=await services.bridge.get(
                    "/errors", map=slug, status=wanted, catch_up=only_catch_up
                ),
                status=wanted or "",
                catch_up=catch_up == "1",
                statuses=ERROR_STATUSES,
            )
        elif tab == "alerts":
            rules = await services.bridge.get("/alert-rules")
            context.update(
                rules=[r for r in rules if r["map_name"] == table_map["name"]],
                error_types=[t.value for t in ErrorType],
                alert_actions=[a.value for a in AlertAction],
            )
        return render(request, "map.html", session, **context)

    @routes.post("/maps/{slug}/{action}")
    async def act(
        request: Request, slug: str, action: MapAction, services: Services = SERVICES
    ) -> Response:
        session, _ = await action_form(request)
        if action not in ACTIONS:
            raise ApiError("console", "POST", request.url.path, 404, f"no action {action.value}")
        try:
            answer = await services.bridge.post(f"/maps/{slug}/{action.value}", token=session.token)
            session.tell(f"{answer['name']}: {action.value} → {MapState(answer['state']).value}")
        except ApiError as exc:
            if exc.status == 404:
                raise
            session.tell(refusal(exc), "error")
        return RedirectResponse(_back(request, "/maps"), status_code=303)

    @routes.post("/errors/{error_id}/retry")
    async def retry(request: Request, error_id: int, services: Services = SERVICES) -> Response:
        session, _ = await action_form(request)
        try:
            answer = await services.bridge.post(f"/errors/{error_id}/retry", token=session.token)
            session.tell(f"error {error_id} retried: record {answer.get('status', answer)}")
        except ApiError as exc:
            session.tell(refusal(exc), "error")
        return RedirectResponse(_back(request, "/maps"), status_code=303)

    @routes.post("/maps/{slug}/errors/retry-all")
    async def retry_all(request: Request, slug: str, services: Services = SERVICES) -> Response:
        session, fields = await action_form(request)
        path = f"/errors/retry-all?map={slug}"
        if fields.get("catch_up") == "1":
            path += "&catch_up=true"
        try:
            answer = await services.bridge.post(path, token=session.token)
            session.tell(f"retried {answer['retried']} open errors")
        except ApiError as exc:
            session.tell(refusal(exc), "error")
        return RedirectResponse(_back(request, f"/maps/{slug}?tab=errors"), status_code=303)

    @routes.post("/alert-rules/{rule_id}")
    async def edit_rule(request: Request, rule_id: int, services: Services = SERVICES) -> Response:
        session, fields = await action_form(request)
        body = {
            "error_type": fields.get("error_type"),
            "count": fields.get("count"),
            # The page asks for minutes, as Microsoft's alert settings do.
            "window_s": _minutes_to_seconds(fields.get("window_min", "")),
            "action": fields.get("action"),
        }
        try:
            await services.bridge.call("PUT", f"/alert-rules/{rule_id}", body, token=session.token)
            session.tell(f"alert rule {rule_id} saved")
        except ApiError as exc:
            session.tell(refusal(exc), "error")
        return RedirectResponse(_back(request, "/maps"), status_code=303)

    return routes


def _age_s(stamp: str | None) -> float | None:
    if not stamp:
        return None
    return (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds()


def _minutes_to_seconds(text: str) -> float | str:
    try:
        return float(text) * 60
    except ValueError:
        return text  # the bridge refuses it with its own message
