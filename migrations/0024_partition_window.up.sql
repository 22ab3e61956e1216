-- The writer could create any month through create_event_partition (`events_p999901`),
-- without bound. It may now create only months the accepted occurred_at window reaches;
-- the window is the store's configuration, written by the log's owner when a store with an
-- ingest role starts.
CREATE TABLE ingest_window (
    only_one boolean  PRIMARY KEY DEFAULT true CHECK (only_one),
    past     interval NOT NULL DEFAULT interval '5 years 1 day',
    future   interval NOT NULL DEFAULT interval '1 day'
);
INSERT INTO ingest_window DEFAULT VALUES;
REVOKE ALL ON ingest_window FROM PUBLIC;

CREATE OR REPLACE FUNCTION create_event_partition(month_start timestamptz) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO'
AS $$
DECLARE
    first_day timestamptz := date_trunc('month', month_start);
    part text := format('events_p%s', to_char(first_day, 'YYYYMM'));
    existing regclass := to_regclass(format('%I', part));
    w ingest_window;
BEGIN
    -- Only the log's owner may create any month; other callers (the writer) only months
    -- the accepted occurred_at window can reach, with a year's slack each way: a backlog
    -- received long ago, and the months created ahead of need (`--months-ahead`).
    IF NOT pg_has_role(session_user, (SELECT relowner FROM pg_class WHERE oid = 'events'::regclass), 'USAGE') THEN
        SELECT * INTO w FROM ingest_window;
        IF first_day < date_trunc('month', now() - w.past - interval '1 year')
           OR first_day > date_trunc('month', now() + w.future + interval '1 year') THEN
            RAISE EXCEPTION 'month % is outside the accepted occurred_at window (% back, % ahead); only the log''s owner may create it',
                to_char(first_day, 'YYYY-MM'), w.past, w.future
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    IF existing IS NULL THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
            part, first_day, first_day + interval '1 month');
        EXECUTE format('CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON %I '
            'FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_rewrite()', part);
    ELSIF NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = existing AND inhparent = 'events'::regclass) THEN
        RAISE EXCEPTION 'table % exists but is not a partition of events; attach or rename it', part
            USING ERRCODE = 'duplicate_table';
    END IF;
    RETURN part;
END
$$;
