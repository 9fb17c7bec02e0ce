"""Initial sync, as pure rules: what a run is, how far it got, and when it is over.

A run of a map's initial sync asks Dataverse for a snapshot of the map's existing rows (the
signal on `initial-sync-requested`), receives them marked with its id on the map's own source
topics, and sends them like live rows. It is over when every row the snapshot holds has
arrived and none of the records it brought is still on its way (pending, queued or held);
then it is `completed`, or `completed_with_errors` when records of it failed. A re-run is a
new run: rows the bridge already holds synced are counted, not sent again, so what it sends
are the rows that failed before, or never arrived, or are still on their way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from services.bridge.domain import SyncStatus


class RunStatus(StrEnum):
    """Where a run of an initial sync is."""

    REQUESTED = "requested"  # the signal is sent; no snapshot row has arrived yet
    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"


# Record statuses of a run's records still on their way to the target.
IN_FLIGHT: frozenset[SyncStatus] = frozenset(
    {SyncStatus.PENDING, SyncStatus.QUEUED, SyncStatus.NOT_SYNCED}
)
# Record statuses that make a snapshot row "already there": the bridge does not send it again.
# Only synced: a record still on its way may yet be refused, and the run must count what
# becomes of every row it does not find synced (sending one twice is harmless: Finance takes a
# row it holds as a duplicate).
ALREADY_THERE: frozenset[SyncStatus] = frozenset({SyncStatus.SYNCED})


@dataclass(frozen=True)
class RunFigures:
    """What a run's records became, counted by status (`sent`: records sent at least once)."""

    sent: int = 0
    synced: int = 0
    failed: int = 0
    filtered: int = 0
    in_flight: int = 0


@dataclass(frozen=True)
class InitialSyncRun:
    """One run of a map's initial sync, with its figures."""

    run_id: UUID
    map_name: str
    legal_entities: tuple[str, ...]
    requested_at: datetime
    status: RunStatus
    rows_expected: int | None
    rows_received: int
    rows_already_synced: int
    held_superseded: int
    finished_at: datetime | None
    figures: RunFigures = RunFigures()

    def settled(self, now: datetime) -> InitialSyncRun:
        """The run with the status its figures give (finished at `now` the first time)."""
        status = run_status(self)
        if status is self.status:
            return self
        done = status in (RunStatus.COMPLETED, RunStatus.COMPLETED_WITH_ERRORS)
        return replace(self, status=status, finished_at=now if done else None)

    def as_json(self) -> dict[str, Any]:
        """The run as the admin API and the CLI show it."""
        return {
            "run_id": str(self.run_id),
            "map": self.map_name,
            "direction": "Dataverse -> Finance",
            "legal_entities": list(self.legal_entities),
            "requested_at": self.requested_at.isoformat(),
            "status": self.status.value,
            "rows_expected": self.rows_expected,
            "rows_received": self.rows_received,
            "rows_already_synced": self.rows_already_synced,
            "rows_sent": self.figures.sent,
            "rows_synced": self.figures.synced,
            "rows_failed": self.figures.failed,
            "rows_filtered": self.figures.filtered,
            "rows_in_flight": self.figures.in_flight,
            "held_superseded": self.held_superseded,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


def run_status(run: InitialSyncRun) -> RunStatus:
    """Requested until a row arrives; over once the whole snapshot arrived and nothing of it
    is on its way; with errors when a record of it failed. A finished run stays finished:
    a record of it retried later from the error queue does not reopen the run."""
    if run.status in (RunStatus.COMPLETED, RunStatus.COMPLETED_WITH_ERRORS):
        return run.status
    if run.rows_expected is None:
        return RunStatus.REQUESTED
    if run.rows_received < run.rows_expected or run.figures.in_flight:
        return RunStatus.RUNNING
    return RunStatus.COMPLETED_WITH_ERRORS if run.figures.failed else RunStatus.COMPLETED
