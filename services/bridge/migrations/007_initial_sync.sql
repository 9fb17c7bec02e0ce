-- Initial sync (docs/bridge.md, "Initial sync"): one row per run of a map's initial sync.
-- The bridge asked Dataverse for a snapshot (`initial-sync-requested`, snapshot id = run id);
-- rows_expected is what Dataverse said the snapshot holds (on every snapshot message),
-- rows_received what reached the bridge, rows_already_synced those the bridge held already
-- synced and did not send again. What was sent, synced and failed is
-- counted from the run's records (bridge_initial_sync_record), so receipts need no bookkeeping.
CREATE TABLE bridge_initial_sync (
    run_id uuid PRIMARY KEY,
    map_name text NOT NULL REFERENCES bridge_map (name),
    legal_entities text[] NOT NULL DEFAULT '{}',
    requested_at timestamptz NOT NULL DEFAULT now(),
    status text NOT NULL DEFAULT 'requested'
        CHECK (status IN ('requested', 'running', 'completed', 'completed_with_errors')),
    rows_expected integer CHECK (rows_expected >= 0),
    rows_received integer NOT NULL DEFAULT 0,
    rows_already_synced integer NOT NULL DEFAULT 0,
    held_superseded integer NOT NULL DEFAULT 0,
    finished_at timestamptz
);
CREATE INDEX bridge_initial_sync_map ON bridge_initial_sync (map_name, requested_at);

-- The records a run brought (no foreign key: retention may prune old records).
CREATE TABLE bridge_initial_sync_record (
    run_id uuid NOT NULL REFERENCES bridge_initial_sync (run_id) ON DELETE CASCADE,
    record_id uuid NOT NULL,
    PRIMARY KEY (run_id, record_id)
);

-- A snapshot row is looked up by its key: is the same record already synced or on its way?
CREATE INDEX bridge_record_map_leg_key ON bridge_record (map_name, leg_name, record_key);
