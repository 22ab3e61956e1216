-- Back to one position for everyone: the functions as 0008, 0020 and 0022 left them.
-- Positions a client was given since the upgrade are tenant positions and mean other events
-- after this; and archives written meanwhile carry a column the older store cannot restore
-- (their manifests say `tenant_positions`).
CREATE OR REPLACE FUNCTION analytics.command_status(command uuid)
RETURNS TABLE (status text, "position" bigint, event_id uuid, event_type text,
               reason text, field text, message text, at timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    t text := analytics.current_tenant();
BEGIN
    IF t IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
        SELECT 'applied'::text, e.position, e.event_id, e.event_type, NULL::text, NULL::text,
               NULL::text, e.recorded_at
        FROM events e WHERE e.command_id = command_status.command AND e.tenant = t LIMIT 1;
    IF FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
        SELECT 'applied'::text, NULL::bigint, NULL::uuid, NULL::text, NULL::text, NULL::text,
               NULL::text, l.recorded_at
        FROM command_ledger l WHERE l.tenant = t AND l.command_id = command_status.command;
    IF FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
        SELECT 'refused'::text, NULL::bigint, NULL::uuid, NULL::text, d.reason, d.field,
               d.message, d.recorded_at
        FROM dead_letters d WHERE d.tenant = t AND d.command_id = command_status.command
        ORDER BY d.id DESC LIMIT 1;
END
$$;

CREATE OR REPLACE FUNCTION analytics.projection_position(name text) RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT position FROM projection_checkpoints WHERE projection = name $$;
DROP FUNCTION analytics.token_position(text, text);
DROP FUNCTION tenant_projection_position(text, text);

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

DROP FUNCTION begin_append(text[], uuid[]);
ALTER TABLE append_permits DROP COLUMN head_tenants, DROP COLUMN head_lasts;
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

DROP TABLE tenant_heads;
DROP INDEX events_tenant_position;
ALTER TABLE events DROP COLUMN tenant_position;
