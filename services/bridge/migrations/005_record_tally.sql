-- Records by map and status, kept as they change, for /metrics (docs/metrics.md): a scrape
-- reads these few rows instead of grouping bridge_record.
--
-- Kept by statement triggers in the transaction of the change, so the tally commits and rolls
-- back with it, counts what every bridge process (and an administrator's SQL) did, and
-- survives restarts; an in-process count could do none of the three. Contention: every
-- statement that writes a map's records holds that map's row lock already (`lock_map`, see
-- repository.py), so the map's tally rows add no wait and no new lock order; rows are
-- upserted in (map, status) order all the same.
-- No record changes between the first count and the triggers' start (a second bridge process).
LOCK TABLE bridge_record IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE bridge_record_tally (
    map_name text NOT NULL,
    status text NOT NULL,
    records bigint NOT NULL,
    PRIMARY KEY (map_name, status)
);

INSERT INTO bridge_record_tally (map_name, status, records)
SELECT map_name, status, count(*) FROM bridge_record GROUP BY map_name, status;

-- One aggregate over the rows the statement touched: -1 for each row as it was, +1 as it is.
CREATE FUNCTION bridge_record_tally_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO bridge_record_tally (map_name, status, records)
        SELECT map_name, status, count(*) FROM after_change
        GROUP BY map_name, status ORDER BY map_name, status
        ON CONFLICT (map_name, status)
        DO UPDATE SET records = bridge_record_tally.records + EXCLUDED.records;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE bridge_record_tally t SET records = t.records - d.n
        FROM (SELECT map_name, status, count(*) AS n FROM before_change
              GROUP BY map_name, status) d
        WHERE t.map_name = d.map_name AND t.status = d.status;
    ELSE
        INSERT INTO bridge_record_tally (map_name, status, records)
        SELECT map_name, status, sum(delta) FROM (
            SELECT map_name, status, -1 AS delta FROM before_change
            UNION ALL
            SELECT map_name, status, 1 AS delta FROM after_change
        ) c
        GROUP BY map_name, status HAVING sum(delta) <> 0 ORDER BY map_name, status
        ON CONFLICT (map_name, status)
        DO UPDATE SET records = bridge_record_tally.records + EXCLUDED.records;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER bridge_record_tally_insert AFTER INSERT ON bridge_record
    REFERENCING NEW TABLE AS after_change
    FOR EACH STATEMENT EXECUTE FUNCTION bridge_record_tally_change();
CREATE TRIGGER bridge_record_tally_update AFTER UPDATE ON bridge_record
    REFERENCING OLD TABLE AS before_change NEW TABLE AS after_change
    FOR EACH STATEMENT EXECUTE FUNCTION bridge_record_tally_change();
CREATE TRIGGER bridge_record_tally_delete AFTER DELETE ON bridge_record
    REFERENCING OLD TABLE AS before_change
    FOR EACH STATEMENT EXECUTE FUNCTION bridge_record_tally_change();
