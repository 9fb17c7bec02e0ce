-- The dual-write bridge's own state: table maps, per-record sync status, the paused queue,
-- the error queue, alert rules and the activity log. Faust keeps nothing durable: every
-- fact the bridge needs after a crash is here.

-- One row per table map; the row lock serialises everything that reads or changes the state.
CREATE TABLE bridge_map (
    name text PRIMARY KEY,
    slug text NOT NULL UNIQUE,
    version text NOT NULL,
    state text NOT NULL,
    state_changed_at timestamptz NOT NULL DEFAULT now()
);

-- One row per mapped (or filtered, or unmappable) record. record_id is the mapped event's
-- causation_id and the receipt's source_event_id; it is stable across re-sends.
CREATE TABLE bridge_record (
    record_id uuid PRIMARY KEY,
    seq bigserial NOT NULL UNIQUE,
    map_name text NOT NULL REFERENCES bridge_map (name),
    leg_name text NOT NULL,
    source_topic text NOT NULL,
    source_event_id uuid NOT NULL,
    record_key text NOT NULL,
    message_key text,
    target_topic text NOT NULL,
    invoice_id text,
    correlation_id text,
    status text NOT NULL,
    reason text,
    source_record jsonb NOT NULL,
    payload jsonb,
    attempts integer NOT NULL DEFAULT 0,
    sent_in_catch_up boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    last_sent_at timestamptz,
    synced_at timestamptz
);
CREATE INDEX bridge_record_invoice ON bridge_record (invoice_id);
CREATE INDEX bridge_record_map_status ON bridge_record (map_name, status);
CREATE INDEX bridge_record_pending ON bridge_record (last_sent_at) WHERE status = 'pending';

-- The paused (and catching-up, and initializing) queue: replayed in seq order.
CREATE TABLE bridge_queue (
    seq bigserial PRIMARY KEY,
    map_name text NOT NULL REFERENCES bridge_map (name),
    record_id uuid NOT NULL UNIQUE REFERENCES bridge_record (record_id),
    bytes integer NOT NULL,
    queued_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bridge_queue_map ON bridge_queue (map_name, seq);

-- The error queue: each failed record with its reason; open until retried and applied.
CREATE TABLE bridge_error (
    id bigserial PRIMARY KEY,
    record_id uuid REFERENCES bridge_record (record_id),
    map_name text NOT NULL REFERENCES bridge_map (name),
    error_type text NOT NULL,
    reason text NOT NULL,
    catch_up boolean NOT NULL DEFAULT false,
    status text NOT NULL DEFAULT 'open',
    retries integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    retried_at timestamptz,
    resolved_at timestamptz
);
CREATE INDEX bridge_error_map_time ON bridge_error (map_name, created_at);

CREATE TABLE bridge_alert_rule (
    id bigserial PRIMARY KEY,
    map_name text NOT NULL REFERENCES bridge_map (name),
    error_type text NOT NULL,
    error_count integer NOT NULL CHECK (error_count >= 1),
    window_s double precision NOT NULL CHECK (window_s > 0),
    action text NOT NULL,
    last_fired_at timestamptz,
    UNIQUE (map_name, error_type, error_count, window_s, action)
);

-- Per map: state changes, errors, retries, re-drives, catch-up start/end, one-way violations.
CREATE TABLE bridge_activity (
    id bigserial PRIMARY KEY,
    map_name text REFERENCES bridge_map (name),
    kind text NOT NULL,
    message text NOT NULL,
    invoice_id text,
    record_id uuid,
    detail jsonb,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX bridge_activity_map ON bridge_activity (map_name, id);
