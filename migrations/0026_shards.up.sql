-- The log in S shards on this one server. A tenant lives on one shard, recorded when its
-- first event is appended (FNV-1a of the slug modulo S, as NATS's partition() routes it).
-- Each shard has its own positions, `shard << 48 | n` (shard 0 is the log as it was: its
-- positions and sequence are today's), its own append lock (APPEND + shard) and its own
-- projection checkpoints, so shards append and fold in parallel; within a shard, appends
-- are serialised and position order is still commit order.
CREATE TABLE log_shards (
    shard integer  PRIMARY KEY,
    seq   regclass NOT NULL UNIQUE,
    CONSTRAINT log_shards_shard_range CHECK (shard >= 0 AND shard < 1024)
);
REVOKE ALL ON log_shards FROM PUBLIC;
GRANT SELECT ON log_shards TO activity_writer;
INSERT INTO log_shards (shard, seq) VALUES (0, 'events_position_seq');

ALTER TABLE tenant_heads ADD COLUMN shard integer NOT NULL DEFAULT 0 REFERENCES log_shards;

-- FNV-1a, 32 bits, of the slug's UTF-8 bytes: the hash nats-server's partition() takes.
CREATE FUNCTION fnv1a32(t text) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    b bytea := convert_to(t, 'UTF8');
    h bigint := 2166136261;
BEGIN
    FOR i IN 0 .. length(b) - 1 LOOP
        h := ((h # get_byte(b, i)) * 16777619) & 4294967295;
    END LOOP;
    RETURN h;
END
$$;

-- The shard `tenant` lives on: recorded, or where its first event will go.
CREATE FUNCTION tenant_shard(tenant text) RETURNS integer
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
    SELECT coalesce(
        (SELECT h.shard FROM tenant_heads h WHERE h.tenant = tenant_shard.tenant),
        (fnv1a32(tenant) % (SELECT count(*) FROM log_shards))::integer)
$$;
REVOKE ALL ON FUNCTION tenant_shard(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenant_shard(text) TO activity_writer;

-- Takes the append locks of the shards `tenants` live on, in shard order (so two appends
-- never wait on each other in a circle). Shard 0's key is the one the log always had.
CREATE FUNCTION lock_tenant_shards(tenants text[]) RETURNS integer[]
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    taken integer[];
    s integer;
BEGIN
    -- Each distinct tenant looked up once (a batch is thousands of one tenant's commands).
    SELECT coalesce(array_agg(s.shard ORDER BY s.shard), '{}') INTO taken
    FROM (SELECT DISTINCT tenant_shard(d.t) AS shard
          FROM (SELECT DISTINCT t FROM unnest(tenants) t) d) s;
    FOREACH s IN ARRAY taken LOOP
        PERFORM pg_advisory_xact_lock(4702695165344632388 + s);
    END LOOP;
    RETURN taken;
END
$$;
REVOKE ALL ON FUNCTION lock_tenant_shards(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lock_tenant_shards(text[]) TO activity_writer;

-- Projection checkpoints per shard; the projection's row keeps its version and epoch.
CREATE TABLE shard_checkpoints (
    projection text        NOT NULL REFERENCES projection_checkpoints ON DELETE CASCADE,
    shard      integer     NOT NULL REFERENCES log_shards,
    position   bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, shard),
    CONSTRAINT shard_checkpoints_in_shard
        CHECK (position >= shard::bigint << 48 AND position < (shard::bigint + 1) << 48)
);
INSERT INTO shard_checkpoints (projection, shard, position, updated_at)
SELECT projection, 0, position, updated_at FROM projection_checkpoints;
ALTER TABLE projection_checkpoints DROP COLUMN position;

-- The store's owner sets the shard count: at install, before any tenant, or later to give
-- new tenants more shards (a tenant stays where it was recorded). A shard that holds a
-- tenant is never removed.
CREATE FUNCTION set_log_shards(n integer) RETURNS void
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
DECLARE
    have integer;
BEGIN
    IF n IS NULL OR n < 1 OR n > 1024 THEN
        RAISE EXCEPTION 'a store has 1 to 1024 shards, not %', n USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(4702695165344632388);
    SELECT count(*) INTO have FROM log_shards;
    IF n < have AND EXISTS (SELECT 1 FROM tenant_heads WHERE shard >= n) THEN
        RAISE EXCEPTION 'shards % to % hold tenants: a store keeps every shard that holds one', n, have - 1
            USING ERRCODE = 'object_in_use';
    END IF;
    FOR s IN have .. n - 1 LOOP
        EXECUTE format('CREATE SEQUENCE events_position_seq_%s AS bigint MINVALUE %s MAXVALUE %s NO CYCLE',
                       s, (s::bigint << 48) + 1, ((s::bigint + 1) << 48) - 1);
        EXECUTE format('GRANT SELECT ON SEQUENCE events_position_seq_%s TO activity_writer', s);
        INSERT INTO log_shards (shard, seq) VALUES (s, format('events_position_seq_%s', s)::regclass);
        INSERT INTO shard_checkpoints (projection, shard, position)
        SELECT projection, s, s::bigint << 48 FROM projection_checkpoints;
    END LOOP;
    FOR s IN n .. have - 1 LOOP
        DELETE FROM shard_checkpoints WHERE shard = s;
        DELETE FROM log_shards WHERE shard = s;
        EXECUTE format('DROP SEQUENCE events_position_seq_%s', s);
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION set_log_shards(integer) FROM PUBLIC;

-- A permit now holds one range of positions per shard, and each fresh tenant's shard.
ALTER TABLE append_permits
    ADD COLUMN shards integer[] NOT NULL DEFAULT '{}',
    ADD COLUMN firsts bigint[] NOT NULL DEFAULT '{}',
    ADD COLUMN lasts bigint[] NOT NULL DEFAULT '{}',
    ADD COLUMN head_shards integer[] NOT NULL DEFAULT '{}';

-- As 0025's, per shard: the fresh pairs of each shard, in the batch's order, take that
-- shard's positions last - n + 1 .. last; `last` is their shard's. A tenant's first event
-- records its shard.
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
    new_shards integer[];
    range_shards integer[];
    range_lasts bigint[];
    range_firsts bigint[];
    count_tenants text[];
    count_shards integer[];
    count_ns bigint[];
    n bigint;
BEGIN
    IF cardinality(tenants) IS DISTINCT FROM cardinality(commands) THEN
        RAISE EXCEPTION 'begin_append: % tenants for % command ids', cardinality(tenants), cardinality(commands)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM lock_tenant_shards(tenants);
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
    -- Each fresh tenant, its shard (looked up once) and its count of fresh commands.
    SELECT array_agg(c.tenant ORDER BY c.tenant), array_agg(c.shard ORDER BY c.tenant),
           array_agg(c.n ORDER BY c.tenant)
    INTO count_tenants, count_shards, count_ns
    FROM (SELECT t AS tenant, tenant_shard(t) AS shard, count(*) AS n
          FROM unnest(fresh_tenants) t GROUP BY t) c;
    WITH ranges AS (
        SELECT c.shard, setval(s.seq, nextval(s.seq) + sum(c.n)::bigint - 1) AS last, sum(c.n)::bigint AS n
        FROM unnest(count_shards, count_ns) AS c(shard, n) JOIN log_shards s USING (shard)
        GROUP BY c.shard, s.seq
    )
    SELECT array_agg(r.shard ORDER BY r.shard), array_agg(r.last ORDER BY r.shard),
           array_agg(r.last - r.n + 1 ORDER BY r.shard)
    INTO range_shards, range_lasts, range_firsts FROM ranges r;
    WITH moved AS (
        INSERT INTO tenant_heads AS h (tenant, head, at, shard)
        SELECT c.tenant, c.n, r.last, c.shard
        FROM unnest(count_tenants, count_shards, count_ns) AS c(tenant, shard, n)
        JOIN unnest(range_shards, range_lasts) AS r(shard, last) USING (shard)
        ORDER BY c.tenant
        ON CONFLICT ON CONSTRAINT tenant_heads_pkey
        DO UPDATE SET head = h.head + EXCLUDED.head, at = EXCLUDED.at
        RETURNING h.tenant, h.head, h.shard
    )
    SELECT array_agg(m.tenant), array_agg(m.head), array_agg(m.shard)
    INTO new_tenants, new_heads, new_shards FROM moved m;
    INSERT INTO append_permits (tx_id, first, last, tenants, commands, head_tenants, head_lasts,
                                shards, firsts, lasts, head_shards)
    VALUES (pg_current_xact_id(), (SELECT min(f) FROM unnest(range_firsts) f),
            (SELECT max(l) FROM unnest(range_lasts) l), fresh_tenants, fresh_commands,
            new_tenants, new_heads, range_shards, range_firsts, range_lasts, new_shards);
    RETURN QUERY
        SELECT k.tenant, k.command_id, r.last, h.head
        FROM unnest(fresh_tenants, fresh_commands) AS k(tenant, command_id)
        JOIN unnest(new_tenants, new_heads, new_shards) AS h(tenant, head, shard) ON h.tenant = k.tenant
        JOIN unnest(range_shards, range_lasts) AS r(shard, last) ON r.shard = h.shard;
END
$$;
REVOKE ALL ON FUNCTION begin_append(text[], uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION begin_append(text[], uuid[]) TO activity_writer;

-- The check holds each shard's rows to that shard's range, and each tenant's rows to its
-- shard. The owner's direct writes record a new tenant on the shard its rows are in.
CREATE OR REPLACE FUNCTION events_check_append() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    permit append_permits;
    n bigint;
    commands bigint;
    strangers bigint;
    misranged bigint;
    misplaced bigint;
BEGIN
    DELETE FROM append_permits WHERE tx_id = pg_current_xact_id() RETURNING * INTO permit;
    IF pg_has_role(session_user, (SELECT relowner FROM pg_class WHERE oid = 'events'::regclass), 'USAGE') THEN
        INSERT INTO tenant_heads AS h (tenant, head, at, shard)
        SELECT a.tenant, max(a.tenant_position), max(a.position), (min(a.position) >> 48)::integer
        FROM appended a GROUP BY a.tenant
        ON CONFLICT ON CONSTRAINT tenant_heads_pkey
        DO UPDATE SET head = greatest(h.head, EXCLUDED.head), at = greatest(h.at, EXCLUDED.at);
        RETURN NULL;
    END IF;
    IF permit IS NULL THEN
        RAISE EXCEPTION 'events can only be appended through begin_append()'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT count(*), count(DISTINCT (a.tenant, a.command_id)) INTO n, commands FROM appended a;
    SELECT count(*) INTO strangers FROM (
        SELECT a.tenant, a.command_id FROM appended a
        EXCEPT SELECT * FROM unnest(permit.tenants, permit.commands)) s;
    SELECT count(*) INTO misranged FROM (
        SELECT a.position >> 48 AS shard, count(*) AS n, min(a.position) AS lo,
               max(a.position) AS hi, count(DISTINCT a.position) AS d
        FROM appended a GROUP BY 1) g
    FULL JOIN unnest(permit.shards, permit.firsts, permit.lasts) AS r(shard, first, last)
      ON r.shard = g.shard
    WHERE g.shard IS NULL OR r.shard IS NULL OR g.n <> r.last - r.first + 1
       OR g.lo <> r.first OR g.hi <> r.last OR g.d <> g.n;
    IF n <> cardinality(permit.commands) OR commands <> n OR strangers <> 0 OR misranged <> 0 THEN
        RAISE EXCEPTION 'appended rows do not match what begin_append() handed out (% rows, % shard ranges wrong)',
            n, misranged
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT count(*) INTO misplaced FROM (
        SELECT a.tenant_position, a.position >> 48 AS shard, h.shard AS given_shard,
               h.head - count(*) OVER w + row_number() OVER (w ORDER BY a.position) AS given
        FROM appended a
        LEFT JOIN unnest(permit.head_tenants, permit.head_lasts, permit.head_shards) AS h(tenant, head, shard)
          ON h.tenant = a.tenant
        WINDOW w AS (PARTITION BY a.tenant)) r
    WHERE r.tenant_position IS DISTINCT FROM r.given OR r.shard IS DISTINCT FROM r.given_shard;
    IF misplaced <> 0 THEN
        RAISE EXCEPTION 'appended rows do not match what begin_append() handed out (% rows at tenant positions or shards not handed out)',
            misplaced
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END
$$;

-- Ingest reads its batch's view under the append locks of the batch's shards.
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
    PERFORM public.lock_tenant_shards(p_tenants);
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

-- A tenant's position in a projection: as 0025's, read against its shard's checkpoint.
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
    SELECT * INTO h FROM tenant_heads t WHERE t.tenant = tenant_projection_position.tenant;
    SELECT c.position INTO folded FROM shard_checkpoints c
    WHERE c.projection = name AND c.shard = coalesce(h.shard, 0);
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF h.tenant IS NOT NULL AND h.at <= folded THEN
        RETURN h.head;
    END IF;
    RETURN coalesce((
        SELECT e.tenant_position FROM events e
        WHERE e.tenant = tenant_projection_position.tenant AND e.position <= folded
        ORDER BY e.position DESC LIMIT 1), 0);
END
$$;
