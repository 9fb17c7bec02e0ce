"""The shared backoff, and which database errors count as a lost connection."""

from __future__ import annotations

import random

import asyncpg
import pytest
from asyncpg.exceptions import _base as asyncpg_base

from services.common.backoff import Backoff
from services.common.db import TRANSIENT_DATABASE_ERRORS, DatabaseStatus, connection_lost


def test_backoff_doubles_up_to_its_cap_with_each_delay_in_the_upper_half() -> None:
    backoff = Backoff(cap=2.0, initial=0.1, rng=random.Random(7))
    nominal = [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    for expected in nominal:
        delay = backoff.next_delay()
        assert expected / 2 <= delay <= expected
    assert backoff.failures == len(nominal)


def test_backoff_jitter_spreads_workers_that_failed_together() -> None:
    delays = {
        round(Backoff(cap=2.0, rng=random.Random(seed)).next_delay(), 6) for seed in range(20)
    }
    assert len(delays) > 10


def test_backoff_starts_over_after_a_success() -> None:
    backoff = Backoff(cap=5.0, initial=0.1)
    for _ in range(6):
        backoff.next_delay()
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.next_delay() <= 0.1


def test_backoff_refuses_a_cap_below_its_first_delay() -> None:
    with pytest.raises(ValueError, match="initial <= cap"):
        Backoff(cap=0.05, initial=0.1)


def test_a_connection_lost_mid_statement_is_transient_and_a_lost_connection() -> None:
    # What the bridge's agent met on a SIGKILL of the postmaster (issue 18).
    exc = asyncpg.InternalClientError(
        "cannot switch to state 15; another operation (2) is in progress"
    )
    assert isinstance(exc, TRANSIENT_DATABASE_ERRORS)
    assert connection_lost(exc)
    assert connection_lost(ConnectionRefusedError(111, "Connection refused"))
    assert connection_lost(asyncpg.InterfaceError("connection is closed"))


def test_a_parameter_asyncpg_cannot_encode_is_no_lost_connection() -> None:
    # An InterfaceError too, but the call's fault: no outage to report, no 503.
    assert not connection_lost(asyncpg_base.DataError("invalid input: out of int64 range"))
    assert not connection_lost(asyncpg.DeadlockDetectedError("deadlock detected"))


def test_database_status_counts_an_outage_once_and_ignores_lost_races() -> None:
    status = DatabaseStatus()
    status.failed(asyncpg.DeadlockDetectedError("deadlock detected"), "consumer")
    assert status.up and status.outages == 0
    status.failed(ConnectionRefusedError(111, "Connection refused"), "outbox relay")
    status.failed(asyncpg.CannotConnectNowError("the database system is starting up"), "x")
    assert not status.up and status.outages == 1 and status.failed_attempts == 2
    assert status.as_dict()["state"] == "down"
    status.reachable()
    shown = status.as_dict()
    assert shown["state"] == "up" and shown["outages"] == 1
    assert "starting up" in str(shown["last_error"])
