"""Optional OpenTelemetry export of dwsim's trace context (docs/metrics.md, "Traces").

The trace context itself needs no OpenTelemetry (services/common/tracing.py). With the `otel`
extra installed and an endpoint set (`DWSIM_OTEL_EXPORTER_OTLP_ENDPOINT`, or the standard
`OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), each scope of work (an
HTTP request, a batch applied, an import run, a re-drive tick) becomes a span exported over
OTLP/HTTP, its span id the one the outbox rows it writes name as their parent. Without either,
no exporter runs and the SDK is never imported.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Mapping
from typing import Any

from services.common import tracing
from services.common.logging import get_logger
from services.common.settings import Settings
from services.common.tracing import TraceContext

log = get_logger(__name__)

_STANDARD_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def export_wanted(settings: Settings, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether spans are to be exported: dwsim's endpoint setting or a standard one is set."""
    return bool(settings.otel_exporter_otlp_endpoint) or any(
        environ.get(name) for name in _STANDARD_ENDPOINTS
    )


class OtelSink:
    """A `tracing.SpanSink` that opens and ends OpenTelemetry spans with an SDK tracer."""

    def __init__(self, tracer: Any) -> None:
        from opentelemetry.context import Context

        self._tracer = tracer
        self._root = Context()  # never OpenTelemetry's own current context: dwsim keeps it
        self._open: dict[str, Any] = {}

    def start(self, name: str, parent: TraceContext | None) -> TraceContext:
        """Open a span, a child of `parent` (a remote span: another process's) or a root."""
        from opentelemetry import trace

        context = self._root
        if parent is not None:
            remote = trace.SpanContext(
                trace_id=int(parent.trace_id, 16),
                span_id=int(parent.span_id, 16),
                is_remote=True,
                trace_flags=trace.TraceFlags(int(parent.flags, 16)),
            )
            context = trace.set_span_in_context(trace.NonRecordingSpan(remote), self._root)
        span = self._tracer.start_span(name, context=context)
        opened = span.get_span_context()
        started = TraceContext(
            f"{opened.trace_id:032x}", f"{opened.span_id:016x}", f"{opened.trace_flags:02x}"
        )
        self._open[started.span_id] = span
        return started

    def end(self, context: TraceContext) -> None:
        """End the span `start` opened for `context`."""
        span = self._open.pop(context.span_id, None)
        if span is not None:
            span.end()


def start_export(settings: Settings, service: str) -> Any | None:
    """Export this process's spans over OTLP/HTTP when wanted (see the module docstring);
    returns the tracer provider, flushed at exit, or None when nothing is exported."""
    if not export_wanted(settings):
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "otel_export_unavailable", reason="install the extra: pip install 'dwsim[otel]'"
        )
        return None
    endpoint = settings.otel_exporter_otlp_endpoint
    # Like OTEL_EXPORTER_OTLP_ENDPOINT, the setting names the collector; traces go to its path.
    exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces" if endpoint else None)
    provider = TracerProvider(resource=Resource.create({"service.name": f"dwsim-{service}"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracing.install_sink(OtelSink(provider.get_tracer("dwsim")))
    atexit.register(provider.shutdown)
    log.info("otel_export_started", service=service, endpoint=endpoint or "from OTEL_* variables")
    return provider
