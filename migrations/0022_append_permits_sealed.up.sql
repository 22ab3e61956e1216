-- The writer could delete its own permit (it had DELETE on append_permits, and the check
-- ran with its rights): `begin_append` then `DELETE FROM append_permits` committed ledger
-- entries with no event, so the real command was later dropped as a duplicate. Permits are
-- now the log owner's alone: the check runs as the owner (it consumes the permit; the
-- writer can neither read, delete nor forge one), and tells the owner apart by the
-- session's login.
CREATE OR REPLACE FUNCTION events_check_append() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
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
    -- This runs as the owner, so the writer is the session's login.
    IF pg_has_role(session_user, (SELECT relowner FROM pg_class WHERE oid = 'events'::regclass), 'USAGE') THEN
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
-- The commit-time check that no permit was left unused reads them as the owner too.
CREATE OR REPLACE FUNCTION append_permit_unused() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
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
REVOKE ALL ON append_permits FROM activity_writer;
