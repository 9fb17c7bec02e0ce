"""The live overview: Dataverse → topics → bridge → Finance and back, each hop with its rate
and backlog, the maps' states and the open error count; refreshed by polling a fragment.

Figures come from the services' own APIs: each one's `/health` (outbox published and not yet
published, events its consumer applied), the bridge's maps, stats and error queue. A rate is
the change of a counter between two polls of the fragment, over the time between them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from services.common.settings import SERVICES
from services.console.access import Session, viewer
from services.console.apis import ApiError, Services, services_of
from services.console.pages import render
from services.simulator.processes import ServiceStartFailed

VIEWER = Depends(viewer)
SERVICES_DEP = Depends(services_of)


@dataclass
class Sample:
    """Counters read at one moment (monotonic seconds)."""

    at: float
    counters: dict[str, int] = field(default_factory=dict)


class RateMeter:
    """Rates per second of counters, from the previous sample; one per console."""

    def __init__(self) -> None:
        self._previous: Sample | None = None

    def rates(self, sample: Sample) -> dict[str, float | None]:
        """Each counter's change per second since the previous sample (None the first time,
        or when a counter went backwards: its service restarted)."""
        previous, self._previous = self._previous, sample
        result: dict[str, float | None] = {}
        for name, value in sample.counters.items():
            before = previous.counters.get(name) if previous else None
            elapsed = sample.at - previous.at if previous else 0.0
            if before is None or elapsed <= 0 or value < before:
                result[name] = None
            else:
                result[name] = (value - before) / elapsed
        return result


async def _health(services: Services, name: str) -> dict[str, Any] | None:
    """A service's health with its figures, or None when it is not running."""
    try:
        client = getattr(services, name)
        health: dict[str, Any] = await client.get("/health")
        return health
    except (ServiceStartFailed, ApiError, httpx.HTTPError):
        return None


async def flow_figures(services: Services, meter: RateMeter) -> dict[str, Any]:
    """Everything the overview shows, read now."""
    healths = dict(
        zip(
            SERVICES,
            await asyncio.gather(*(_health(services, name) for name in SERVICES)),
            strict=True,
        )
    )
    maps: list[dict[str, Any]] = []
    stats: dict[str, dict[str, int]] = {}
    open_errors = 0
    if healths["bridge"] is not None:
        maps, stats, errors = await asyncio.gather(
            services.bridge.get("/maps"),
            services.bridge.get("/stats"),
            services.bridge.get("/errors", status="open"),
        )
        open_errors = len(errors)
    counters: dict[str, int] = {}
    for name, health in healths.items():
        if health is not None and "outbox" in health:
            counters[f"{name}.published"] = int(health["outbox"]["published"])
        if health is not None and health.get("consumer"):
            counters[f"{name}.applied"] = int(health["consumer"]["applied"])
    for m in maps:
        figures = stats.get(m["name"], {})
        counters[f"{m['slug']}.synced"] = int(figures.get("synced", 0))
        counters[f"{m['slug']}.forwarded"] = int(figures.get("forwarded", 0))
    rates = meter.rates(Sample(time.monotonic(), counters))
    return {
        "services": {
            name: {
                "up": health is not None,
                "backlog": (health or {}).get("outbox", {}).get("unpublished"),
                "published_rate": rates.get(f"{name}.published"),
                "applied_rate": rates.get(f"{name}.applied"),
                "applied": counters.get(f"{name}.applied"),
                "parked": (health or {}).get("parked_events"),
            }
            for name, health in healths.items()
        },
        "maps": [
            {
                "slug": m["slug"],
                "name": m["name"],
                "state": m["state"],
                "queued": m["queue"]["count"],
                "pending": stats.get(m["name"], {}).get("pending", 0),
                "failed": stats.get(m["name"], {}).get("failed", 0),
                "synced": stats.get(m["name"], {}).get("synced", 0),
                "synced_rate": rates.get(f"{m['slug']}.synced"),
                "forwarded_rate": rates.get(f"{m['slug']}.forwarded"),
            }
            for m in maps
        ],
        "open_errors": open_errors,
        "read_at": time.strftime("%H:%M:%S"),
    }


def router() -> APIRouter:
    """The overview page and its live fragment."""
    routes = APIRouter()
    meter = RateMeter()

    @routes.get("/")
    async def overview(
        request: Request, session: Session = VIEWER, services: Services = SERVICES_DEP
    ) -> Response:
        return render(
            request,
            "overview.html",
            session,
            flow=await flow_figures(services, meter),
            refresh_ms=int(request.app.state.settings.console_refresh_s * 1000),
        )

    @routes.get("/overview/live")
    async def live(
        request: Request, session: Session = VIEWER, services: Services = SERVICES_DEP
    ) -> Response:
        return render(request, "flow.html", session, flow=await flow_figures(services, meter))

    return routes
