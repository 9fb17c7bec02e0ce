"""Running a map's initial sync from the outside, as the CLI and tests do: start (or re-run)
it through the bridge's admin API and follow the run until it is over."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from services.simulator.clients import Services
from services.simulator.deadlines import until

FINISHED = frozenset({"completed", "completed_with_errors"})


async def start_initial_sync(
    services: Services, table_map: str, legal_entities: Iterable[str] = ()
) -> dict[str, Any]:
    """Start (stopped map) or re-run (running map) a map's initial sync; returns the run."""
    run: dict[str, Any] = await services.bridge.post(
        f"/maps/{table_map}/initial-sync", {"legal_entities": sorted(set(legal_entities))}
    )
    return run


async def follow_initial_sync(
    services: Services,
    table_map: str,
    run_id: str,
    deadline_s: float,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The run once it is over (completed, or completed with errors), polled until the
    deadline (then `DeadlinePassed` naming the last figures); `on_progress` sees each change."""
    last: dict[str, Any] = {}

    async def over() -> dict[str, Any] | None:
        runs = await services.bridge.get(f"/maps/{table_map}/initial-sync")
        [run] = [r for r in runs if r["run_id"] == run_id]
        if on_progress is not None and run != last:
            on_progress(run)
        last.clear()
        last.update(run)
        return run if run["status"] in FINISHED else None

    return await until(
        over,
        f"initial sync {run_id} of map {table_map} to finish",
        deadline_s,
        poll_s=0.5,
        last_seen=lambda: progress_line(last) if last else "no run seen",
    )


def progress_line(run: dict[str, Any]) -> str:
    """A run's figures in one line."""
    expected = run.get("rows_expected")
    return (
        f"{run['status']}: {run['rows_received']}/{'?' if expected is None else expected} rows "
        f"received, {run['rows_already_synced']} already synced, {run['rows_sent']} sent, "
        f"{run['rows_synced']} synced, {run['rows_failed']} failed, "
        f"{run['rows_filtered']} filtered"
    )
