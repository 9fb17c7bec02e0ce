"""Map state machine over every state × action pair, and what an arriving record does."""

from __future__ import annotations

import itertools

import pytest

from services.bridge.domain import (
    Arrival,
    MapAction,
    MapActionRefused,
    MapState,
    arrival,
    transition,
)

S = MapState
A = MapAction

ALLOWED: dict[tuple[MapState, MapAction], MapState] = {
    (S.NOT_RUNNING, A.RUN): S.INITIALIZING,
    (S.INITIALIZING, A.INITIALIZED): S.RUNNING,
    (S.RUNNING, A.STOP): S.NOT_RUNNING,
    (S.RUNNING, A.PAUSE): S.PAUSED,
    (S.PAUSED, A.RESUME): S.RESUMING,
    (S.RESUMING, A.CAUGHT_UP): S.RUNNING,
}

ALL_PAIRS = list(itertools.product(MapState, MapAction))
REFUSED = [pair for pair in ALL_PAIRS if pair not in ALLOWED]


@pytest.mark.parametrize(("state", "action"), list(ALLOWED))
def test_allowed_transition(state: MapState, action: MapAction) -> None:
    assert transition(state, action, map_name="m") is ALLOWED[(state, action)]


@pytest.mark.parametrize(("state", "action"), REFUSED)
def test_refused_transition(state: MapState, action: MapAction) -> None:
    with pytest.raises(MapActionRefused) as info:
        transition(state, action, map_name="m")
    assert info.value.state is state
    assert info.value.action is action
    assert f"(state: {state.value})" in str(info.value)


def test_every_pair_is_covered() -> None:
    assert len(ALLOWED) + len(REFUSED) == len(MapState) * len(MapAction) == 30


def test_refusal_message_names_map_action_and_state() -> None:
    with pytest.raises(MapActionRefused) as info:
        transition(S.PAUSED, A.PAUSE, map_name="X")
    assert str(info.value) == "cannot pause map 'X' while it is not running (state: paused)"


def test_refused_run_says_the_map_must_be_stopped() -> None:
    with pytest.raises(MapActionRefused, match="cannot run map 'X' while it is not stopped"):
        transition(S.RUNNING, A.RUN, map_name="X")


def test_full_cycle() -> None:
    state = S.NOT_RUNNING
    for action in (A.RUN, A.INITIALIZED, A.PAUSE, A.RESUME, A.CAUGHT_UP, A.STOP):
        state = transition(state, action, map_name="m")
    assert state is S.NOT_RUNNING


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (S.RUNNING, Arrival.FORWARD),
        (S.PAUSED, Arrival.QUEUE),
        (S.RESUMING, Arrival.QUEUE),
        (S.INITIALIZING, Arrival.QUEUE),
        (S.NOT_RUNNING, Arrival.HOLD_NOT_SYNCED),
    ],
)
def test_arrival_by_state(state: MapState, expected: Arrival) -> None:
    assert arrival(state) is expected
