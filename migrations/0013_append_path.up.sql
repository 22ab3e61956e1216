-- The database enforces the append path. Roles other than the log's owner cannot write the
-- ledger or move the position sequence at all, and can add rows to `events` only as
-- `begin_append` allowed: it records the batch's command ids in the ledger, hands out the
-- positions of the fresh ones and leaves a permit for this transaction. A statement-level
-- trigger then checks the rows against the permit (positions exactly the ones handed out,
-- each once; command ids exactly the fresh ones) and consumes it.
CREATE TABLE append_permits (
    tx_id    xid8     PRIMARY KEY,
    first    bigint   NOT NULL,
    last     bigint   NOT NULL,
    tenants  text[]   NOT NULL,
    commands uuid[]   NOT NULL
);

-- Records (tenant, command id) pairs in the ledger and returns the fresh ones (not applied
-- before) with `last`, the last of the positions handed to them in order: fresh pair i gets
-- position last - n + i. It takes the append lock itself (the store's APPEND_LOCK), so no
-- caller can interleave positions with another appender.
CREATE FUNCTION begin_append(tenants text[], commands uuid[])
RETURNS TABLE (tenant text, command_id uuid, last bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    fresh_tenants text[];
    fresh_commands uuid[];
    n bigint;
    top bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(4702695165344632388);
    IF cardinality(tenants) IS DISTINCT FROM cardinality(commands) THEN
        RAISE EXCEPTION 'begin_append: % tenants for % command ids', cardinality(tenants), cardinality(commands)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    WITH fresh AS (
        INSERT INTO command_ledger AS l (tenant, command_id)
        SELECT k.tenant, k.command_id FROM unnest(tenants, commands) AS k(tenant, command_id)
        ORDER BY 1, 2
        ON CONFLICT DO NOTHING
        RETURNING l.tenant, l.command_id
    )
    SELECT array_agg(f.tenant ORDER BY f.tenant, f.command_id),
           array_agg(f.command_id ORDER BY f.tenant, f.command_id)
    INTO fresh_tenants, fresh_commands FROM fresh f;
    n := coalesce(cardinality(fresh_commands), 0);
    IF n = 0 THEN
        RETURN;
    END IF;
    top := setval('events_position_seq', nextval('events_position_seq') + n - 1);
    INSERT INTO append_permits (tx_id, first, last, tenants, commands)
    VALUES (pg_current_xact_id(), top - n + 1, top, fresh_tenants, fresh_commands);
    RETURN QUERY SELECT k.tenant, k.command_id, top FROM unnest(fresh_tenants, fresh_commands) AS k(tenant, command_id);
END
$$;
REVOKE ALL ON FUNCTION begin_append(text[], uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION begin_append(text[], uuid[]) TO activity_writer;

-- Runs as the role that wrote the rows (SECURITY INVOKER), so it can tell the owner apart.
CREATE FUNCTION events_check_append() RETURNS trigger
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
CREATE TRIGGER events_append_path AFTER INSERT ON events
    REFERENCING NEW TABLE AS appended
    FOR EACH STATEMENT EXECUTE FUNCTION events_check_append();

-- A permit still there at commit was never used: its ledger rows would mark commands as
-- applied that have no event. The commit fails, and they go with it.
CREATE FUNCTION append_permit_unused() RETURNS trigger
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
CREATE CONSTRAINT TRIGGER append_permits_used AFTER INSERT ON append_permits
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION append_permit_unused();

-- The application role appends through begin_append and COPY only.
REVOKE INSERT, UPDATE, DELETE ON command_ledger FROM activity_writer;
REVOKE ALL ON SEQUENCE events_position_seq FROM activity_writer;
GRANT SELECT ON SEQUENCE events_position_seq TO activity_writer;
GRANT SELECT, DELETE ON append_permits TO activity_writer;
-- The ingestor reads and writes nothing of the read side.
REVOKE ALL ON projection_checkpoints FROM activity_writer;
REVOKE ALL ON ALL TABLES IN SCHEMA analytics, projection_state FROM activity_writer;
REVOKE USAGE ON SCHEMA analytics, projection_state FROM activity_writer;
DO $$
DECLARE t record;
BEGIN
    FOR t IN SELECT schemaname, tablename FROM pg_policies
             WHERE policyname = 'projector_writes' AND schemaname IN ('analytics', 'projection_state')
    LOOP
        EXECUTE format('DROP POLICY projector_writes ON %I.%I', t.schemaname, t.tablename);
    END LOOP;
END
$$;
