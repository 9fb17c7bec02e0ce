-- Filtered source rows are counted, not stored (docs/bridge.md, "Filtered rows"). Microsoft's
-- dual-write keeps no row for a source row a map's filter leaves out; the bridge counts them
-- per map, leg, invoice and reason, so "2 reversals of invoice X filtered by skip sync on the
-- actuals map" can still be said. About half the actuals of every confirmation are skip-sync
-- reversals: a bridge record for each was half the bridge's record inserts.
--
-- One upsert per batch adds to these rows, in the transaction that records the batch's event
-- ids in the inbox, so a redelivered event (dropped by the inbox) never counts twice.
-- invoice_id is '' for a row of no invoice, so that the key needs no NULL rule.
CREATE TABLE bridge_filtered_count (
    map_name text NOT NULL REFERENCES bridge_map (name),
    leg_name text NOT NULL,
    invoice_id text NOT NULL,
    reason text NOT NULL,
    source_rows bigint NOT NULL CHECK (source_rows > 0),
    first_at timestamptz NOT NULL DEFAULT now(),
    last_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (map_name, invoice_id, leg_name, reason)
);

-- Filtered records stored before this migration are counted too; their rows stay (a stored
-- record that becomes filtered later keeps its row, see commands.py), so nothing is lost.
INSERT INTO bridge_filtered_count
    (map_name, leg_name, invoice_id, reason, source_rows, first_at, last_at)
SELECT map_name, leg_name, coalesce(invoice_id, ''), coalesce(reason, ''), count(*),
       min(created_at), max(updated_at)
FROM bridge_record WHERE status = 'filtered'
GROUP BY map_name, leg_name, coalesce(invoice_id, ''), coalesce(reason, '');

-- Per map, all invoices and reasons together: what `/stats` and /metrics read (one row per
-- map, not a sum over every invoice's rows at each scrape). Kept by the same statement that
-- adds to the counts above.
CREATE TABLE bridge_filtered_total (
    map_name text PRIMARY KEY REFERENCES bridge_map (name),
    source_rows bigint NOT NULL CHECK (source_rows >= 0)
);
INSERT INTO bridge_filtered_total (map_name, source_rows)
SELECT map_name, sum(source_rows) FROM bridge_filtered_count GROUP BY map_name;

-- An initial sync's run counts its filtered snapshot rows itself, at intake: they leave no
-- record to count them by.
ALTER TABLE bridge_initial_sync ADD COLUMN rows_filtered integer NOT NULL DEFAULT 0
    CHECK (rows_filtered >= 0);
UPDATE bridge_initial_sync s SET rows_filtered = f.n
FROM (SELECT l.run_id, count(*) AS n FROM bridge_initial_sync_record l
      JOIN bridge_record r ON r.record_id = l.record_id
      WHERE r.status = 'filtered' GROUP BY l.run_id) f
WHERE s.run_id = f.run_id;
