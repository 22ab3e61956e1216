-- Back to one log: possible only while every event is on shard 0 (a store that never had
-- more than one shard, or whose tenants were all moved back). The functions as 0025 left them.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM tenant_heads WHERE shard <> 0)
       OR EXISTS (SELECT 1 FROM events WHERE position >= 1::bigint << 48) THEN
        RAISE EXCEPTION 'tenants live on shards other than 0: move them to shard 0 before migrating down'
            USING ERRCODE = 'object_in_use';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION ingest_view(
    p_stream text, p_lock_timeout text,
    p_tenants text[], p_commands uuid[], p_user_tenants text[], p_users text[],
    OUT checkpoint_seq bigint, OUT checkpoint_epoch bigint,
    OUT applied_tenants text[], OUT applied_commands uuid[],
    OUT known_tenants text[],
    OUT known_user_tenants text[], OUT known_users text[])
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM set_config('lock_timeout', p_lock_timeout, true);
    PERFORM pg_advisory_xact_lock(4702695165344632388);
    SELECT c.last_seq, c.leader_epoch INTO checkpoint_seq, checkpoint_epoch
    FROM public.ingest_checkpoints c WHERE c.stream = p_stream;
    SELECT coalesce(array_agg(l.tenant), '{}'), coalesce(array_agg(l.command_id), '{}')
    INTO applied_tenants, applied_commands
    FROM public.command_ledger l
    JOIN (SELECT DISTINCT * FROM unnest(p_tenants, p_commands)) AS k(tenant, command_id)
      ON l.tenant = k.tenant AND l.command_id = k.command_id;
    SELECT coalesce(array_agg(t.tenant), '{}') INTO known_tenants
    FROM public.tenants t WHERE t.tenant = ANY (p_tenants);
    SELECT coalesce(array_agg(u.tenant), '{}'), coalesce(array_agg(u.user_id), '{}')
    INTO known_user_tenants, known_users
    FROM public.users u
    JOIN (SELECT DISTINCT * FROM unnest(p_user_tenants, p_users)) AS k(tenant, user_id)
      ON u.tenant = k.tenant AND u.user_id = k.user_id;
END
$$;

CREATE OR REPLACE FUNCTION tenant_projection_position(name text, tenant text) RETURNS bigint
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    folded bigint;
    h tenant_heads;
BEGIN
    IF tenant_projection_position.tenant IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT c.position INTO folded FROM projection_checkpoints c WHERE c.projection = name;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO h FROM tenant_heads t WHERE t.tenant = tenant_projection_position.tenant;
    -- Folded past the tenant's last batch: its head, without touching the log.
    IF FOUND AND h.at <= folded THEN
        RETURN h.head;
    END IF;
    RETURN coalesce((
        SELECT e.tenant_position FROM events e
        WHERE e.tenant = tenant_projection_position.tenant AND e.position <= folded
        ORDER BY e.position DESC LIMIT 1), 0);
END
$$;

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
    misplaced bigint;
BEGIN
    DELETE FROM append_permits WHERE tx_id = pg_current_xact_id() RETURNING * INTO permit;
    -- The log's owner (and superusers) may write directly: migrations, repairs, fixtures.
    -- This runs as the owner, so the writer is the session's login. Its rows still move
    -- their tenants' heads, so a tenant's position never misses them.
    IF pg_has_role(session_user, (SELECT relowner FROM pg_class WHERE oid = 'events'::regclass), 'USAGE') THEN
        INSERT INTO tenant_heads AS h (tenant, head, at)
        SELECT a.tenant, max(a.tenant_position), max(a.position) FROM appended a GROUP BY a.tenant
        ON CONFLICT ON CONSTRAINT tenant_heads_pkey
        DO UPDATE SET head = greatest(h.head, EXCLUDED.head), at = greatest(h.at, EXCLUDED.at);
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
    SELECT count(*) INTO misplaced FROM (
        SELECT a.tenant_position, h.head - count(*) OVER w + row_number() OVER (w ORDER BY a.position) AS given
        FROM appended a LEFT JOIN unnest(permit.head_tenants, permit.head_lasts) AS h(tenant, head)
          ON h.tenant = a.tenant
        WINDOW w AS (PARTITION BY a.tenant)) r
    WHERE r.tenant_position IS DISTINCT FROM r.given;
    IF n <> permit.last - permit.first + 1 OR lo <> permit.first OR hi <> permit.last
       OR positions <> n OR commands <> n OR strangers <> 0 THEN
        RAISE EXCEPTION 'appended rows do not match what begin_append() handed out (% rows, positions % to %, expected % to %)',
            n, lo, hi, permit.first, permit.last
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF misplaced <> 0 THEN
        RAISE EXCEPTION 'appended rows do not match what begin_append() handed out (% rows at tenant positions not handed out)',
            misplaced
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END
$$;

DROP FUNCTION begin_append(text[], uuid[]);
CREATE FUNCTION begin_append(tenants text[], commands uuid[])
RETURNS TABLE (tenant text, command_id uuid, last bigint, tenant_last bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    fresh_tenants text[];
    fresh_commands uuid[];
    new_tenants text[];
    new_heads bigint[];
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
    WITH counts AS (
        SELECT t AS tenant, count(*) AS n FROM unnest(fresh_tenants) t GROUP BY t ORDER BY t
    ), moved AS (
        INSERT INTO tenant_heads AS h (tenant, head, at) SELECT c.tenant, c.n, top FROM counts c
        ON CONFLICT ON CONSTRAINT tenant_heads_pkey
        DO UPDATE SET head = h.head + EXCLUDED.head, at = EXCLUDED.at
        RETURNING h.tenant, h.head
    )
    SELECT array_agg(m.tenant), array_agg(m.head) INTO new_tenants, new_heads FROM moved m;
    INSERT INTO append_permits (tx_id, first, last, tenants, commands, head_tenants, head_lasts)
    VALUES (pg_current_xact_id(), top - n + 1, top, fresh_tenants, fresh_commands, new_tenants, new_heads);
    RETURN QUERY
        SELECT k.tenant, k.command_id, top, h.head
        FROM unnest(fresh_tenants, fresh_commands) AS k(tenant, command_id)
        JOIN unnest(new_tenants, new_heads) AS h(tenant, head) ON h.tenant = k.tenant;
END
$$;
REVOKE ALL ON FUNCTION begin_append(text[], uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION begin_append(text[], uuid[]) TO activity_writer;
ALTER TABLE append_permits DROP COLUMN shards, DROP COLUMN firsts, DROP COLUMN lasts, DROP COLUMN head_shards;

ALTER TABLE projection_checkpoints ADD COLUMN position bigint NOT NULL DEFAULT 0
    CONSTRAINT projection_checkpoints_position_nonnegative CHECK (position >= 0);
UPDATE projection_checkpoints c SET position = s.position
FROM shard_checkpoints s WHERE s.projection = c.projection AND s.shard = 0;
SELECT set_log_shards(1);
DROP FUNCTION set_log_shards(integer);
DROP TABLE shard_checkpoints;
DROP FUNCTION lock_tenant_shards(text[]);
DROP FUNCTION tenant_shard(text);
DROP FUNCTION fnv1a32(text);
ALTER TABLE tenant_heads DROP COLUMN shard;
DROP TABLE log_shards;
