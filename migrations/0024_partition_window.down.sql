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
BEGIN
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
DROP TABLE ingest_window;
