"""W3C traceparent parsing and formatting, and how a scope picks an event's context."""

from __future__ import annotations

import pytest

from services.common import tracing
from services.common.tracing import TraceContext, parse_traceparent

# The example of the W3C Trace Context recommendation, §3.2.
W3C_EXAMPLE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_the_w3c_example_parses_and_formats_back() -> None:
    parsed = parse_traceparent(W3C_EXAMPLE)
    assert parsed == TraceContext("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "01")
    assert parsed.traceparent == W3C_EXAMPLE
    assert parse_traceparent(W3C_EXAMPLE.encode()) == parsed


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        W3C_EXAMPLE + "-extra",  # version 00 has nothing after the flags
        b"\xff\xfe",
    ],
)
def test_an_invalid_traceparent_is_ignored(value: str | bytes | None) -> None:
    assert parse_traceparent(value) is None


def test_a_later_version_keeps_its_known_fields() -> None:
    parsed = parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what")
    assert parsed is not None and parsed.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_a_new_trace_and_its_child_are_valid_and_share_the_trace_id() -> None:
    root = tracing.new_trace()
    child = root.child()
    assert parse_traceparent(root.traceparent) == root
    assert parse_traceparent(child.traceparent) == child
    assert child.trace_id == root.trace_id and child.span_id != root.span_id
    assert tracing.new_trace().trace_id != root.trace_id


def test_headers_carry_the_context_as_pairs_or_a_mapping() -> None:
    pairs = [("event_type", b"invoice.confirmed"), ("traceparent", W3C_EXAMPLE.encode())]
    assert tracing.from_headers(pairs) == parse_traceparent(W3C_EXAMPLE)
    assert tracing.from_headers(dict(pairs)) == parse_traceparent(W3C_EXAMPLE)
    assert tracing.from_headers([("event_type", b"x")]) is None
    assert tracing.from_headers(None) is None


def test_an_event_written_outside_any_scope_starts_a_trace() -> None:
    assert parse_traceparent(tracing.traceparent_for("inv-1")) is not None
    assert tracing.trace_id_for("inv-1") is None


def test_a_request_with_a_traceparent_continues_it_in_a_child_span() -> None:
    caller = parse_traceparent(W3C_EXAMPLE)
    with tracing.continued(caller) as started:
        assert not started.local
        written = parse_traceparent(tracing.traceparent_for("inv-1"))
    assert written is not None and caller is not None
    # The request is a span of the caller's trace, and the parent of what its event causes.
    assert written == started.current
    assert written.trace_id == caller.trace_id and written.span_id != caller.span_id


def test_a_batch_of_two_invoices_writes_each_invoice_in_its_own_trace() -> None:
    one, two = tracing.new_trace(), tracing.new_trace()
    with tracing.for_events([("inv-1", one), ("inv-2", two), ("inv-3", None)]):
        assert tracing.trace_id_for("inv-1") == one.trace_id
        assert tracing.trace_id_for("inv-2") == two.trace_id
        # An invoice without a traced event of its own falls back on the batch's first.
        assert tracing.trace_id_for("inv-3") == one.trace_id
        assert tracing.trace_id_for(None) == one.trace_id
    assert tracing.current_scope() is None


def test_a_batch_without_any_trace_starts_a_local_root() -> None:
    with tracing.for_events([("inv-1", None)]):
        scope = tracing.current_scope()
        assert scope is not None and scope.local


def test_log_lines_get_the_trace_id_of_their_invoice() -> None:
    one, two = tracing.new_trace(), tracing.new_trace()
    assert "trace_id" not in tracing.add_trace_id(None, "info", {"event": "x"})
    with tracing.for_events([("inv-1", one), ("inv-2", two)]):
        line = tracing.add_trace_id(None, "info", {"event": "x", "invoice_id": "inv-2"})
        assert line["trace_id"] == two.trace_id
        line = tracing.add_trace_id(None, "info", {"event": "x"})
        assert line["trace_id"] == one.trace_id
