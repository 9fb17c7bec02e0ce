"""Pure rules of the dual-write bridge: map state, record status, paused queue, alert rules,
Microsoft's live-sync limits.

Nothing here does I/O or reads the clock: the bridge's use cases load state from PostgreSQL,
call these functions, and write the outcome back. What a table map is and how one is applied is
in `mapping.py`; the bridge record's lifecycle in `records.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final
from uuid import UUID

from services.common.errors import RuleError

# --------------------------------------------------------------------------------------------
# Errors


class BridgeRuleError(RuleError):
    """Base of every rule the bridge refuses to break."""


class MapActionRefused(BridgeRuleError):
    """An administrator action that the map's current state does not allow."""

    def __init__(self, map_name: str, action: MapAction, state: MapState, requirement: str) -> None:
        self.map_name = map_name
        self.action = action
        self.state = state
        super().__init__(
            f"cannot {action.verb} map '{map_name}' while it is not {requirement} "
            f"(state: {state.value})"
        )


class QueueLimitReached(BridgeRuleError):
    """The paused queue is past its limit: new records are refused until the map resumes."""


# --------------------------------------------------------------------------------------------
# Map state machine


class MapState(StrEnum):
    """State of a table map, as shown in the dual-write admin page."""

    NOT_RUNNING = "not_running"
    INITIALIZING = "initializing"
    RUNNING = "running"
    PAUSED = "paused"
    RESUMING = "resuming"


class MapAction(StrEnum):
    """What moves a map between states.

    run, stop, pause and resume are the administrator's (or an alert rule's). initialized and
    caught_up are the bridge reporting that initialization finished / the paused queue drained.
    """

    RUN = "run"
    STOP = "stop"
    PAUSE = "pause"
    RESUME = "resume"
    INITIALIZED = "initialized"
    CAUGHT_UP = "caught_up"

    @property
    def verb(self) -> str:
        return _VERBS[self]


_VERBS: Final[dict[MapAction, str]] = {
    MapAction.RUN: "run",
    MapAction.STOP: "stop",
    MapAction.PAUSE: "pause",
    MapAction.RESUME: "resume",
    MapAction.INITIALIZED: "finish initializing",
    MapAction.CAUGHT_UP: "finish resuming",
}

# action -> (the one state it is allowed from, the state it leads to, words for the message)
TRANSITIONS: Final[dict[MapAction, tuple[MapState, MapState, str]]] = {
    MapAction.RUN: (MapState.NOT_RUNNING, MapState.INITIALIZING, "stopped"),
    MapAction.INITIALIZED: (MapState.INITIALIZING, MapState.RUNNING, "initializing"),
    MapAction.STOP: (MapState.RUNNING, MapState.NOT_RUNNING, "running"),
    MapAction.PAUSE: (MapState.RUNNING, MapState.PAUSED, "running"),
    MapAction.RESUME: (MapState.PAUSED, MapState.RESUMING, "paused"),
    MapAction.CAUGHT_UP: (MapState.RESUMING, MapState.RUNNING, "resuming"),
}


def transition(state: MapState, action: MapAction, *, map_name: str) -> MapState:
    """The state after `action`, or MapActionRefused naming the map, the action and the state.

    Stopping or pausing is allowed only from running, as in dual-write: a paused map must be
    resumed (and catch up) before it can be stopped, so its queue is never silently abandoned.
    """
    allowed_from, to, requirement = TRANSITIONS[action]
    if state is not allowed_from:
        raise MapActionRefused(map_name, action, state, requirement)
    return to


class Arrival(StrEnum):
    """What happens to a record that arrives for a map in a given state."""

    FORWARD = "forward"
    QUEUE = "queue"
    HOLD_NOT_SYNCED = "hold_not_synced"


ARRIVAL_BY_STATE: Final[dict[MapState, Arrival]] = {
    MapState.RUNNING: Arrival.FORWARD,
    MapState.PAUSED: Arrival.QUEUE,
    # Records arriving during catch-up queue behind the queued ones: forwarding them at once
    # could overtake an older change of the same record.
    MapState.RESUMING: Arrival.QUEUE,
    # The administrator asked the map to run; records arriving while it initializes queue
    # behind the initial sync and go when it finishes, in order.
    MapState.INITIALIZING: Arrival.QUEUE,
    # Microsoft: a stopped map syncs nothing. dwsim does not drop the record: it is held as
    # "not synced (map stopped)" where a person can see it; running the map again (its initial
    # sync) is what carries held records, as dual-write's initial write copies existing rows.
    MapState.NOT_RUNNING: Arrival.HOLD_NOT_SYNCED,
}

NOT_SYNCED_MAP_STOPPED: Final = "not synced (map stopped)"


def arrival(state: MapState) -> Arrival:
    """What the bridge does with a record arriving while the map is in `state`."""
    return ARRIVAL_BY_STATE[state]


# --------------------------------------------------------------------------------------------
# Record sync status


class SyncStatus(StrEnum):
    """Where one mapped record stands."""

    PENDING = "pending"  # sent, no receipt from the target yet
    SYNCED = "synced"  # the target applied it (receipt)
    FAILED = "failed"  # mapping, target refusal, time-out or queue limit: kept with its reason
    QUEUED = "queued"  # waiting in the paused (or catching-up) queue
    FILTERED = "filtered"  # left out by the leg's filter, e.g. skip sync
    NOT_SYNCED = "not_synced"  # arrived while the map was stopped; held, visible


_NEEDS_REASON: Final = frozenset({SyncStatus.FAILED, SyncStatus.FILTERED, SyncStatus.NOT_SYNCED})


@dataclass(frozen=True)
class RecordStatus:
    """A sync status with its reason; failed, filtered and not synced always say why."""

    status: SyncStatus
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.status in _NEEDS_REASON and not self.reason:
            raise BridgeRuleError(f"record status '{self.status.value}' needs a reason")
        if self.status not in _NEEDS_REASON and self.reason is not None:
            raise BridgeRuleError(f"record status '{self.status.value}' takes no reason")

    @classmethod
    def failed(cls, reason: str) -> RecordStatus:
        return cls(SyncStatus.FAILED, reason)

    @classmethod
    def filtered(cls, reason: str) -> RecordStatus:
        return cls(SyncStatus.FILTERED, reason)

    @classmethod
    def not_synced_map_stopped(cls) -> RecordStatus:
        return cls(SyncStatus.NOT_SYNCED, NOT_SYNCED_MAP_STOPPED)


# --------------------------------------------------------------------------------------------
# Paused queue limit

GIB: Final = 1024**3


@dataclass(frozen=True)
class QueueLimits:
    """Caps on a paused map's queue; defaults are Microsoft's (one day, 1 GB)."""

    max_age: timedelta = timedelta(days=1)
    max_size_bytes: int = GIB
    # Microsoft has no count cap; a simulation may set one to reach the limit quickly.
    max_count: int | None = None


@dataclass(frozen=True)
class Admit:
    """The record may join the queue."""


@dataclass(frozen=True)
class Refuse:
    """The queue is past its limit; the record is refused (kept as failed with this reason)."""

    reason: str

    def raise_(self) -> None:
        raise QueueLimitReached(self.reason)


def queue_admission(
    count: int, size_bytes: int, oldest_age: timedelta | None, limits: QueueLimits
) -> Admit | Refuse:
    """May one more record join a queue holding `count` records of `size_bytes` in total,
    the oldest queued `oldest_age` ago (None when empty)?

    Past any limit new records are refused until the map resumes; the records already queued
    are kept and replayed on resume.
    """
    if oldest_age is not None and oldest_age >= limits.max_age:
        return Refuse(
            f"queue limit reached: oldest queued record is {oldest_age} old "
            f"(limit {limits.max_age}); resume the map"
        )
    if size_bytes >= limits.max_size_bytes:
        return Refuse(
            f"queue limit reached: {size_bytes} bytes queued "
            f"(limit {limits.max_size_bytes}); resume the map"
        )
    if limits.max_count is not None and count >= limits.max_count:
        return Refuse(
            f"queue limit reached: {count} records queued (limit {limits.max_count}); "
            "resume the map"
        )
    return Admit()


# --------------------------------------------------------------------------------------------
# Alert rules


class ErrorType(StrEnum):
    """Kinds of record errors; every error has one, and an alert rule counts one of them.

    Only TIMEOUT says that a side is down: the target did not answer at all. The others are
    data errors of one record (or a full queue), for the error queue and a person, not a reason
    to stop the whole map.
    """

    MAPPING = "mapping"  # the record could not be mapped (missing field, unmapped value)
    TARGET_REFUSED = "target_refused"  # rejected by the target: its receipt gave the reason
    TIMEOUT = "timeout"  # target unavailable: no receipt within the receipt time-out
    QUEUE_LIMIT = "queue_limit"  # refused past the paused queue limit
    PLATFORM_LIMIT = "platform_limit"  # its source transaction is past Microsoft's limits
    ONE_WAY_VIOLATION = "one_way_violation"


class AlertAction(StrEnum):
    """What a rule does when it fires."""

    NOTIFY = "notify"
    PAUSE = "pause"
    STOP = "stop"


@dataclass(frozen=True)
class AlertRule:
    """`count` errors of `error_type` within `window` on map `map_name` → `action`.

    As in Microsoft's dual-write, a rule names the one error type it counts: errors of other
    types never make it fire.
    """

    map_name: str
    error_type: ErrorType
    count: int
    window: timedelta
    action: AlertAction

    def __post_init__(self) -> None:
        if self.count < 1:
            raise BridgeRuleError(f"alert rule for map '{self.map_name}': count must be >= 1")
        if self.window <= timedelta(0):
            raise BridgeRuleError(f"alert rule for map '{self.map_name}': window must be > 0")


def default_alert_rule(map_name: str) -> AlertRule:
    """Microsoft's example, dwsim's default for each map: 10 errors in 15 minutes → pause,
    counting only receipt time-outs (the target unavailable). Pausing is for a side that is
    down: ten refused or unmappable records are ten entries in the error queue, and the map
    keeps sending the records that are fine."""
    return AlertRule(map_name, ErrorType.TIMEOUT, 10, timedelta(minutes=15), AlertAction.PAUSE)


@dataclass(frozen=True)
class TriggeredAlert:
    """A rule that fired at `fired_at` with `error_count` errors in its window."""

    rule: AlertRule
    error_count: int
    fired_at: datetime

    @property
    def action(self) -> AlertAction:
        return self.rule.action

    @property
    def reason(self) -> str:
        return (
            f"{self.error_count} {self.rule.error_type.value} errors within "
            f"{self.rule.window} on map '{self.rule.map_name}' (rule: {self.rule.count})"
        )


def evaluate_alerts(
    rules: Sequence[AlertRule],
    error_timestamps_by_type: Mapping[ErrorType, Sequence[datetime]],
    now: datetime,
    last_fired: Mapping[AlertRule, datetime] | None = None,
) -> list[TriggeredAlert]:
    """The rules that fire now, given the errors of ONE map by type.

    An error counts when it lies in (now - window, now]. A rule fires once per crossing: errors
    at or before the rule's last firing (`last_fired`, kept by the caller) do not count again,
    so after firing the rule needs `count` new errors to fire a second time.
    """
    maps = {rule.map_name for rule in rules}
    if len(maps) > 1:
        raise BridgeRuleError(f"evaluate_alerts takes the rules of one map; got {sorted(maps)}")
    fired = last_fired or {}
    triggered: list[TriggeredAlert] = []
    for rule in rules:
        since = now - rule.window
        previous = fired.get(rule)
        if previous is not None and previous > since:
            since = previous
        stamps = error_timestamps_by_type.get(rule.error_type, ())
        in_window = sum(1 for t in stamps if since < t <= now)
        if in_window >= rule.count:
            triggered.append(TriggeredAlert(rule, in_window, now))
    return triggered


# --------------------------------------------------------------------------------------------
# Microsoft's live-sync limits (domain.md, "Limits Microsoft documents")


class PlatformLimits(StrEnum):
    """Whether the bridge applies the real platform's limits (setting `platform_limits`)."""

    NONE = "none"  # dwsim's asynchronous model: sync everything, count what would fail
    MICROSOFT = "microsoft"  # fail a transaction past the limits, as dual-write does


@dataclass(frozen=True)
class TransactionLimits:
    """What one dual-write transaction may hold; the defaults are Microsoft's documented ones."""

    max_records: int = 1_000
    max_duration: timedelta = timedelta(minutes=2)
    max_legal_entities: int = 250  # live sync
    max_legal_entities_initial_sync: int = 40


MICROSOFT_LIMITS: Final = TransactionLimits()


@dataclass(frozen=True)
class SourceTransaction:
    """One source transaction as the bridge sees it.

    `records` are the rows it gives to dual-write (an invoice's header and its billed lines;
    skip-sync rows are not synced, so they do not count); `first_arrival` is when the bridge
    saw its first record.
    """

    transaction_id: UUID
    records: int
    legal_entities: int
    first_arrival: datetime


def transaction_breach(
    transaction: SourceTransaction,
    now: datetime,
    limits: TransactionLimits = MICROSOFT_LIMITS,
    *,
    initial_sync: bool = False,
) -> str | None:
    """Why dual-write would refuse `transaction` at `now`, or None when it is within limits.

    More than `max_records` records, more legal entities than live sync (or initial sync)
    handles, or records still arriving more than `max_duration` after the first: the whole
    transaction fails, as the platform rolls back a transaction it cannot carry.
    """
    if transaction.records > limits.max_records:
        return (
            f"platform limit: transaction of {transaction.records:,} records > "
            f"{limits.max_records:,} records per dual-write transaction"
        )
    max_entities = (
        limits.max_legal_entities_initial_sync if initial_sync else limits.max_legal_entities
    )
    if transaction.legal_entities > max_entities:
        sync = "initial" if initial_sync else "live"
        return (
            f"platform limit: transaction of {transaction.legal_entities:,} legal entities > "
            f"{max_entities:,} per {sync}-sync transaction"
        )
    elapsed = now - transaction.first_arrival
    if elapsed > limits.max_duration:
        return (
            f"platform limit: transaction still delivering after {elapsed.total_seconds():,.0f} s "
            f"> {limits.max_duration.total_seconds():,.0f} s per dual-write transaction"
        )
    return None


class LimitOutcome(StrEnum):
    """What the bridge does with the records of a source transaction, given the setting."""

    WITHIN = "within"  # within the limits: synced as usual
    FAILS = "fails"  # past them, limits applied: every record fails with the reason
    WOULD_FAIL = "would_fail"  # past them, limits not applied: synced, counted as would-fail


def limit_outcome(breach: str | None, applied: PlatformLimits) -> LimitOutcome:
    """The outcome of a transaction with `breach` (None: within limits) under the setting."""
    if breach is None:
        return LimitOutcome.WITHIN
    return LimitOutcome.FAILS if applied is PlatformLimits.MICROSOFT else LimitOutcome.WOULD_FAIL
