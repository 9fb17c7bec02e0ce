"""The initial sync's run rules (services/bridge/initial_sync.py): when a run is over."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from uuid import uuid4

from services.bridge.initial_sync import InitialSyncRun, RunFigures, RunStatus, run_status

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
REQUESTED = InitialSyncRun(
    run_id=uuid4(),
    map_name="Project invoice proposal V2 (invoices)",
    legal_entities=("USPM",),
    requested_at=NOW,
    status=RunStatus.REQUESTED,
    rows_expected=None,
    rows_received=0,
    rows_already_synced=0,
    held_superseded=0,
    finished_at=None,
)


def test_a_run_without_snapshot_rows_is_requested() -> None:
    assert run_status(REQUESTED) is RunStatus.REQUESTED


def test_a_run_is_running_until_every_row_arrived() -> None:
    run = replace(REQUESTED, rows_expected=10, rows_received=9, figures=RunFigures(sent=9))
    assert run_status(run) is RunStatus.RUNNING


def test_a_run_is_running_while_a_record_of_it_is_on_its_way() -> None:
    run = replace(
        REQUESTED, rows_expected=10, rows_received=10, figures=RunFigures(sent=10, in_flight=1)
    )
    assert run_status(run) is RunStatus.RUNNING


def test_a_run_whose_rows_all_arrived_and_settled_is_completed_with_its_finish_time() -> None:
    run = replace(
        REQUESTED,
        status=RunStatus.RUNNING,
        rows_expected=10,
        rows_received=10,
        rows_already_synced=4,
        figures=RunFigures(sent=6, synced=6),
    )
    settled = run.settled(NOW)
    assert settled.status is RunStatus.COMPLETED
    assert settled.finished_at == NOW


def test_a_failed_record_makes_the_run_completed_with_errors() -> None:
    run = replace(
        REQUESTED, rows_expected=3, rows_received=3, figures=RunFigures(sent=3, synced=2, failed=1)
    )
    assert run_status(run) is RunStatus.COMPLETED_WITH_ERRORS


def test_an_empty_snapshot_is_completed_as_soon_as_its_size_is_known() -> None:
    assert run_status(replace(REQUESTED, rows_expected=0)) is RunStatus.COMPLETED


def test_a_finished_run_stays_finished_when_a_record_of_it_is_retried_later() -> None:
    done = replace(
        REQUESTED,
        status=RunStatus.COMPLETED_WITH_ERRORS,
        rows_expected=3,
        rows_received=3,
        finished_at=NOW,
        figures=RunFigures(sent=3, in_flight=1),
    )
    assert done.settled(NOW) is done
