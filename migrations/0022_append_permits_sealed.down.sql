CREATE OR REPLACE FUNCTION events_check_append() RETURNS trigger
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
DECLARE
    permit append_permits;
    n bigint;
    lo bigint;
    hi bigint;
    positions bigint;
    commands bigint;
    strangers bigint;
BEGIN
    DELETE FROM append_permits WHERE tx_id = pg_current_xact_id() RETURNING * INTO permit;
    -- The log's owner (and superusers) may write directly: migrations, repairs, fixtures.
    IF pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = 'events'::regclass), 'USAGE') THEN
        RETURN NULL;
    END IF;
    IF permit IS NULL THEN
        RAISE EXCEPTION 'events can only be appended through begin_append()'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT count(*), min(a.position), max(a.position), count(DISTINCT a.position),
           count(DISTINCT (a.tenant, a.command_id))
    INTO n, lo, hi, positions, commands FROM appended a;
    SELECT count(*) INTO strangers FROM (
        SELECT a.tenant, a.command_id FROM appended a
        EXCEPT SELECT * FROM unnest(permit.tenants, permit.commands)) s;
    IF n <> permit.last - permit.first + 1 OR lo <> permit.first OR hi <> permit.last
       OR positions <> n OR commands <> n OR strangers <> 0 THEN
        RAISE EXCEPTION 'appended rows do not match what begin_append() handed out (% rows, positions % to %, expected % to %)',
            n, lo, hi, permit.first, permit.last
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END
$$;
GRANT SELECT, DELETE ON append_permits TO activity_writer;
CREATE OR REPLACE FUNCTION append_permit_unused() RETURNS trigger
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM append_permits WHERE tx_id = NEW.tx_id) THEN
        RAISE EXCEPTION 'begin_append() handed out positions % to % that were never appended', NEW.first, NEW.last
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END
$$;
