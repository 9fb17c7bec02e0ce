"""W3C trace context: one invoice's flow across the three services is one trace.

A `traceparent` (`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`) starts with the HTTP
request that causes a change (a span of the caller's trace, else of a new one), is stored with
every outbox row the change writes (naming the writing span as the parent), travels as a Kafka
header, and while a consumer applies the event a child span of it is current, so the rows that
handler writes carry the trace on. Each scope of work is one span; spans are exported only when
a `SpanSink` is installed (services/common/otel.py).

A batch of events applied in one transaction may belong to several invoices: the scope then
knows each correlation id's (invoice id's) context, and an outbox row or a log line takes the
context of its own correlation id, the batch's first otherwise. Work that starts on its own (an
HTTP request without a `traceparent`, Finance's periodic import, the bridge's re-drive) starts a
local root; before it writes for an invoice it *resumes* the invoice's trace, read from the
`traceparent` its inbox kept for that invoice's latest event (`resume`).

Pure except `resume`: no OpenTelemetry needed (see docs/metrics.md, "Traces").
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:  # logging imports this module, and db imports logging
    from services.common.db import DbConnection

HEADER: Final = "traceparent"
_SAMPLED: Final = "01"
# Version 00 is exactly this; a later version may append fields after a dash (W3C §3.2.4).
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16


@dataclass(frozen=True)
class TraceContext:
    """One span's place in a trace: the trace id all its spans share, its own span id."""

    trace_id: str
    span_id: str
    flags: str = _SAMPLED

    @property
    def traceparent(self) -> str:
        """The W3C `traceparent` header value of this span (version 00)."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def child(self) -> TraceContext:
        """A new span of the same trace, for work this span causes."""
        return TraceContext(self.trace_id, new_span_id(), self.flags)


def new_span_id() -> str:
    """A random, non-zero 8-byte span id in hex."""
    while (span := secrets.token_hex(8)) == _ZERO_SPAN:
        pass  # one in 2**64
    return span


def new_trace() -> TraceContext:
    """The root span of a new, sampled trace."""
    while (trace := secrets.token_hex(16)) == _ZERO_TRACE:
        pass
    return TraceContext(trace, new_span_id())


def parse_traceparent(value: str | bytes | None) -> TraceContext | None:
    """The context a `traceparent` value names, or None when it is absent or invalid (W3C:
    an invalid header is ignored and a new trace starts; version ff and all-zero ids are
    invalid, a version-00 value must have nothing after its flags)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id, span_id, flags)


def from_headers(
    headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None,
) -> TraceContext | None:
    """The context in Kafka message headers (aiokafka's list of pairs, or a mapping)."""
    if not headers:
        return None
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        if name == HEADER:
            return parse_traceparent(value)
    return None


class SpanSink(Protocol):
    """Where spans go when they are exported (services/common/otel.py); none by default."""

    def start(self, name: str, parent: TraceContext | None) -> TraceContext:
        """Open a span (a child of `parent`, else a new trace's root); its context."""

    def end(self, context: TraceContext) -> None:
        """Close the span `start` returned."""


_sink: SpanSink | None = None


def install_sink(sink: SpanSink | None) -> None:
    """Export spans to `sink` from now on (None: stop exporting)."""
    global _sink
    _sink = sink


def _open_span(name: str, parent: TraceContext | None, opened: list[TraceContext]) -> TraceContext:
    if _sink is None:
        return parent.child() if parent is not None else new_trace()
    context = _sink.start(name, parent)
    opened.append(context)
    return context


@dataclass
class TraceScope:
    """The context of the work running now: `current`, and per correlation id the context of
    that invoice's events when a batch holds several. `local` is True when this process
    started the trace itself (no caller's or event's context), so an invoice's stored trace
    may be resumed instead."""

    current: TraceContext
    by_correlation: dict[str, TraceContext] = field(default_factory=dict)
    local: bool = False
    # Spans the sink opened for this scope, closed when it ends.
    opened: list[TraceContext] = field(default_factory=list)

    def context_for(self, correlation_id: str | None) -> TraceContext:
        """The context that work for `correlation_id` belongs to."""
        if correlation_id is not None:
            found = self.by_correlation.get(correlation_id)
            if found is not None:
                return found
        return self.current


_scope: ContextVar[TraceScope | None] = ContextVar("dwsim_trace_scope", default=None)


def current_scope() -> TraceScope | None:
    """The scope of the work running now, if any."""
    return _scope.get()


@contextmanager
def scope(trace_scope: TraceScope) -> Iterator[TraceScope]:
    """Make `trace_scope` current inside the block; the spans it opened end with it."""
    token = _scope.set(trace_scope)
    try:
        yield trace_scope
    finally:
        _scope.reset(token)
        if _sink is not None:
            for context in reversed(trace_scope.opened):
                _sink.end(context)


@contextmanager
def continued(parent: TraceContext | None, name: str = "work") -> Iterator[TraceScope]:
    """Work caused by `parent` (a request's or an event's context): a child span of it, or a
    local root when there is no parent."""
    opened: list[TraceContext] = []
    current = _open_span(name, parent, opened)
    with scope(TraceScope(current, local=parent is None, opened=opened)) as started:
        yield started


@contextmanager
def for_events(
    contexts: Iterable[tuple[str | None, TraceContext | None]], name: str = "apply"
) -> Iterator[None]:
    """Work applying events (correlation id, context each), in one transaction: each
    invoice's work is a child span of its own event's; the first traced event's is current."""
    opened: list[TraceContext] = []
    first: TraceContext | None = None
    by_correlation: dict[str, TraceContext] = {}
    for correlation_id, parent in contexts:
        if parent is None or (correlation_id is not None and correlation_id in by_correlation):
            continue
        if first is not None and correlation_id is None:
            continue  # an event without an invoice works in the batch's first span
        span = _open_span(name, parent, opened)
        first = first or span
        if correlation_id is not None:
            by_correlation[correlation_id] = span
    if first is None:
        with continued(None, name):
            yield
    else:
        with scope(TraceScope(first, by_correlation, opened=opened)):
            yield


def traceparent_for(correlation_id: str | None) -> str:
    """The `traceparent` of an event written now for `correlation_id`: the span of the work
    writing it is the parent of the work the event causes (a new trace outside any scope)."""
    active = _scope.get()
    return (active.context_for(correlation_id) if active is not None else new_trace()).traceparent


def trace_id_for(correlation_id: str | None) -> str | None:
    """The trace id of the work for `correlation_id` running now, if any (for log lines)."""
    active = _scope.get()
    return active.context_for(correlation_id).trace_id if active is not None else None


async def resume(conn: DbConnection, correlation_ids: Iterable[str | None]) -> None:
    """In work this process started itself, take up the traces of the invoices it acts on:
    each correlation id's context becomes that of the latest event its inbox applied for it
    with a trace. Does nothing inside a caller's or an event's trace, or outside any scope."""
    active = _scope.get()
    if active is None or not active.local:
        return
    wanted = sorted({c for c in correlation_ids if c} - active.by_correlation.keys())
    if not wanted:
        return
    rows = await conn.fetch(
        "SELECT DISTINCT ON (correlation_id) correlation_id, traceparent FROM dwsim_inbox "
        "WHERE correlation_id = ANY($1::text[]) AND traceparent IS NOT NULL "
        "ORDER BY correlation_id, applied_at DESC",
        wanted,
    )
    for row in rows:
        stored = parse_traceparent(row["traceparent"])
        if stored is not None:
            active.by_correlation[row["correlation_id"]] = _open_span(
                "resume", stored, active.opened
            )
    # An invoice without a stored trace stays in this work's own; not looked up again.
    for correlation_id in wanted:
        active.by_correlation.setdefault(correlation_id, active.current)


def add_trace_id(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the trace id beside the invoice id (or the bound correlation id)
    of every line logged while a trace is current."""
    active = _scope.get()
    if active is not None and "trace_id" not in event_dict:
        invoice = event_dict.get("invoice_id") or event_dict.get("correlation_id")
        key = str(invoice) if invoice is not None else None
        event_dict["trace_id"] = active.context_for(key).trace_id
    return event_dict
