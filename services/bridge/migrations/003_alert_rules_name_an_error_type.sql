-- An alert rule names the one error type it counts, as Microsoft's do. The seeded rule counted
-- every type ('any'): one actuals-created message of ten actuals of an unknown legal entity
-- made ten refusals and paused the whole actuals map. Pausing is for a side that is down, so
-- the seeded rule now counts receipt time-outs (target unavailable) only; a refused or
-- unmappable record is an entry in the error queue.
DELETE FROM bridge_alert_rule a
WHERE a.error_type = 'any'
  AND EXISTS (
      SELECT 1 FROM bridge_alert_rule t
      WHERE t.error_type = 'timeout' AND t.map_name = a.map_name
        AND t.error_count = a.error_count AND t.window_s = a.window_s AND t.action = a.action
  );
UPDATE bridge_alert_rule SET error_type = 'timeout', last_fired_at = NULL
WHERE error_type = 'any';
ALTER TABLE bridge_alert_rule
    ADD CONSTRAINT bridge_alert_rule_names_an_error_type CHECK (error_type <> 'any');
