-- Retention (services/common/retention.py, services/bridge/workers.py): the activity log is
-- pruned by its time, synced records lose their payload after the retention. Both indexes
-- let a batch read only the rows it prunes; the second holds only synced records that still
-- have a payload, so it stays as small as one retention period of them.
CREATE INDEX bridge_activity_at ON bridge_activity (at);
CREATE INDEX bridge_record_synced_payload ON bridge_record (synced_at)
    WHERE status = 'synced' AND payload IS NOT NULL;
