-- Outbox rows the relay can never publish (larger than the broker accepts): moved here with the
-- reason in the relay's own transaction, so the rows after them go on in order. A person lists
-- them at GET /outbox/parked; the change that wrote them stays committed.
CREATE TABLE dwsim_outbox_parked (
    id bigint PRIMARY KEY,  -- the row's id in dwsim_outbox: its place in commit order
    event_id uuid NOT NULL UNIQUE,
    topic text NOT NULL,
    key text,
    event_type text NOT NULL,
    correlation_id text,
    value bytea NOT NULL,
    size integer NOT NULL,  -- bytes on the wire, as the producer counts them
    reason text NOT NULL,
    created_at timestamptz NOT NULL,
    parked_at timestamptz NOT NULL DEFAULT now()
);
