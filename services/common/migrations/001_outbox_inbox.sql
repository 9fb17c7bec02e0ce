-- Transactional outbox: events written in the same transaction as the change they describe.
CREATE TABLE dwsim_outbox (
    id bigserial PRIMARY KEY,
    event_id uuid NOT NULL UNIQUE,
    topic text NOT NULL,
    key text,
    event_type text NOT NULL,
    correlation_id text,
    value bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX dwsim_outbox_unpublished ON dwsim_outbox (id) WHERE published_at IS NULL;

-- Inbox: ids of the events already applied; a repeat fails on the key and is skipped.
CREATE TABLE dwsim_inbox (
    event_id uuid PRIMARY KEY,
    topic text NOT NULL,
    event_type text NOT NULL,
    correlation_id text,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Events whose handler failed: kept with the reason, where a person can see and retry them.
CREATE TABLE dwsim_parked_event (
    event_id uuid PRIMARY KEY,
    topic text NOT NULL,
    key text,
    event_type text NOT NULL,
    correlation_id text,
    value bytea NOT NULL,
    reason text NOT NULL,
    parked_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 1
);
