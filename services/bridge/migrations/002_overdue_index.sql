-- The re-drive looks for a map's pending records sent before a cut-off every second. With an
-- index on the send time alone the planner took (map_name, status) and visited every pending
-- record (all 10,000 of a large invoice in flight, or more) to find none overdue.
DROP INDEX bridge_record_pending;
CREATE INDEX bridge_record_overdue ON bridge_record (map_name, last_sent_at)
    WHERE status = 'pending';
