-- W3C trace context (services/common/tracing.py). Each outbox row keeps the traceparent of the
-- span that wrote it, and the relay sends it as the message's `traceparent` header; a parked
-- row keeps it too. The inbox keeps the traceparent each applied event arrived with, so work
-- that starts on its own (a posting request, the periodic import, a re-drive) can resume the
-- trace of the invoice it acts on: the latest traced inbox row of that correlation id.
ALTER TABLE dwsim_outbox ADD COLUMN traceparent text;
ALTER TABLE dwsim_outbox_parked ADD COLUMN traceparent text;
ALTER TABLE dwsim_inbox ADD COLUMN traceparent text;
-- Only rows with a trace are looked up by correlation id; untraced ones cost no index entry.
CREATE INDEX dwsim_inbox_correlation_trace ON dwsim_inbox (correlation_id, applied_at)
    WHERE traceparent IS NOT NULL;
