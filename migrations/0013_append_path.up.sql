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
-- position last - n + i. Call it under the append lock.
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
    -- The log's owner (and superusers) may write directly: migrations, repairs, fixtures.
    IF pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = 'events'::regclass), 'USAGE') THEN
        RETURN NULL;
    END IF;
    DELETE FROM append_permits WHERE tx_id = pg_current_xact_id() RETURNING * INTO permit;
    IF NOT FOUND THEN
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
