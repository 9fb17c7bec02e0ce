-- Source transactions and Microsoft's live-sync limits (docs/bridge.md, "Microsoft's limits").
-- One row per source transaction and map it brought records to: how big the whole transaction
-- is, when the bridge saw its first record, and, once past a limit, why and what was done:
-- 'fails' (limits applied: its records are in the error queue) or 'would_fail' (synced,
-- counted as a transaction that would fail in production).
CREATE TABLE bridge_source_transaction (
    transaction_id uuid NOT NULL,
    map_name text NOT NULL REFERENCES bridge_map (name),
    records integer NOT NULL CHECK (records >= 0),
    legal_entities integer NOT NULL CHECK (legal_entities >= 0),
    first_arrival timestamptz NOT NULL,
    invoice_id text,
    outcome text NOT NULL DEFAULT 'within' CHECK (outcome IN ('within', 'fails', 'would_fail')),
    breach text,
    PRIMARY KEY (transaction_id, map_name)
);
CREATE INDEX bridge_source_transaction_over ON bridge_source_transaction (map_name)
    WHERE outcome <> 'within';
