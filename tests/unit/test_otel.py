"""The optional OpenTelemetry export: dwsim's scopes become SDK spans whose ids are the ones the
outbox rows carry, so the three services' spans of one invoice form one trace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.common import otel, tracing
from services.common.settings import Settings

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace", reason="the otel extra is not installed")
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

INVOICE = "9b0c3a52-5a2e-4b7e-9d51-6f6f0c1a7e11"


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    tracing.install_sink(None)


def as_service(exporter: InMemorySpanExporter, service: str) -> None:
    """Export the spans opened from now on as `service`'s (each service is its own process)."""
    provider = sdk_trace.TracerProvider(
        resource=Resource.create({"service.name": f"dwsim-{service}"})
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install_sink(otel.OtelSink(provider.get_tracer("dwsim")))


def test_one_invoice_is_one_exported_trace_across_the_three_services(
    exported: InMemorySpanExporter,
) -> None:
    as_service(exported, "dataverse")
    with tracing.continued(None, "POST /invoices/confirm"):
        confirmed = tracing.traceparent_for(INVOICE)  # the outbox row of invoice-confirmed
    as_service(exported, "bridge")
    with tracing.for_events([(INVOICE, tracing.parse_traceparent(confirmed))], "apply"):
        header = tracing.traceparent_for(INVOICE)  # the outbox row of the mapped header
    as_service(exported, "finance")
    with tracing.for_events([(INVOICE, tracing.parse_traceparent(header))], "apply"):
        receipt = tracing.traceparent_for(INVOICE)

    spans = {
        span.resource.attributes["service.name"]: span for span in exported.get_finished_spans()
    }
    assert set(spans) == {"dwsim-dataverse", "dwsim-bridge", "dwsim-finance"}
    assert len({span.context.trace_id for span in spans.values()}) == 1
    dataverse, bridge, finance = (spans[f"dwsim-{s}"] for s in ("dataverse", "bridge", "finance"))
    assert dataverse.parent is None
    assert bridge.parent is not None and bridge.parent.span_id == dataverse.context.span_id
    assert finance.parent is not None and finance.parent.span_id == bridge.context.span_id
    # What travels in the headers names the exported spans.
    for traceparent, span in ((confirmed, dataverse), (header, bridge), (receipt, finance)):
        parsed = tracing.parse_traceparent(traceparent)
        assert parsed is not None
        assert int(parsed.span_id, 16) == span.context.span_id


def test_a_batch_of_two_invoices_exports_a_span_in_each_invoice_s_trace(
    exported: InMemorySpanExporter,
) -> None:
    one, two = tracing.new_trace(), tracing.new_trace()
    as_service(exported, "finance")
    with tracing.for_events([("inv-1", one), ("inv-2", two)], "apply"):
        pass
    traces = {f"{span.context.trace_id:032x}" for span in exported.get_finished_spans()}
    assert traces == {one.trace_id, two.trace_id}


def test_nothing_is_exported_unless_an_endpoint_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DWSIM_OTEL_EXPORTER_OTLP_ENDPOINT", *otel._STANDARD_ENDPOINTS):
        monkeypatch.delenv(name, raising=False)
    assert not otel.export_wanted(Settings(), environ={})
    assert otel.export_wanted(Settings(), environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert otel.export_wanted(Settings(otel_exporter_otlp_endpoint="http://c:4318"), environ={})
    assert otel.start_export(Settings(), "finance") is None
    assert tracing._sink is None  # no span is opened: scopes cost what they did without OTel
