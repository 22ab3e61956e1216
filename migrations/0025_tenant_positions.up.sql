-- Positions that belong to the tenant. Every event gets `tenant_position`, its place in its
-- tenant's own log (1, 2, 3, … for a tenant created after this), handed out by
-- `begin_append` under the append lock from `tenant_heads`. Everything a tenant sees (the
-- read tables, X-Activity-Position, command status, cache entries) is a tenant position, so
-- no tenant can learn how much the others write. `position` stays the log's order, which
-- the folds walk.
--
-- Events already in the log keep their position as their tenant position: a client that
-- holds a position from before the upgrade (a command status, a min-position) still means
-- the same event by it. A tenant's head starts past them and past every archived month,
-- so an archive attached later never collides with a new tenant position.
ALTER TABLE events ADD COLUMN tenant_position bigint;
-- The log refuses UPDATE from everyone; its owner lifts that for this one backfill.
ALTER TABLE events DISABLE TRIGGER events_append_only;
UPDATE events SET tenant_position = position;
ALTER TABLE events ENABLE TRIGGER events_append_only;
ALTER TABLE events
    ALTER COLUMN tenant_position SET NOT NULL,
    ADD CONSTRAINT events_tenant_position_positive CHECK (tenant_position > 0);
-- A tenant's position at a log position (its last event at or before it): one probe per
-- partition, read from the index alone.
CREATE INDEX events_tenant_position ON events (tenant, position) INCLUDE (tenant_position);

-- Per tenant, the last tenant position handed out (`head`) and a log position at or after
-- the tenant's last event (`at`, the last position of the batch that held it): once a
-- projection has folded past `at`, the tenant's position in it is `head`, read without
-- touching the log. Written by begin_append, and by the log's owner's direct writes.
CREATE TABLE tenant_heads (
    tenant text   PRIMARY KEY,
    head   bigint NOT NULL,
    at     bigint NOT NULL,
    CONSTRAINT tenant_heads_head_positive CHECK (head > 0)
);
REVOKE ALL ON tenant_heads FROM PUBLIC;
-- A tenant's archived months count with their last position (their tenants are recorded;
-- a month archived before that was recorded counts for every tenant).
INSERT INTO tenant_heads (tenant, head, at)
SELECT k.tenant, greatest(coalesce(e.top, 0), coalesce(a.top, 0), 1),
       greatest(coalesce(e.top, 0), coalesce(a.top, 0), 1)
FROM (SELECT tenant FROM events UNION SELECT tenant FROM command_ledger WHERE tenant <> ''
      UNION SELECT tenant FROM tenants
      UNION SELECT unnest(tenants) FROM archived_months WHERE attached_at IS NULL) k
LEFT JOIN (SELECT tenant, max(position) AS top FROM events GROUP BY tenant) e USING (tenant)
LEFT JOIN LATERAL (
    SELECT max(m.last_position) AS top FROM archived_months m
    WHERE m.attached_at IS NULL AND (m.tenants IS NULL OR k.tenant = ANY (m.tenants))) a ON true;

-- A permit now also holds each tenant's new head.
ALTER TABLE append_permits
    ADD COLUMN head_tenants text[] NOT NULL DEFAULT '{}',
    ADD COLUMN head_lasts bigint[] NOT NULL DEFAULT '{}';

-- Records (tenant, command id) pairs in the ledger and returns the fresh ones with `last`,
-- the last log position handed to them (fresh pair i, in the batch's order, gets
-- last - n + i), and `tenant_last`, their tenant's new head (the tenant's fresh events, in
-- the batch's order, end there). It takes the append lock itself (the store's APPEND_LOCK).
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

-- The check now also holds each tenant's rows to the tenant positions handed out: the
-- tenant's fresh rows, in log order, end at its new head, one apart.
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

-- For the store itself (the HTTP API's position watcher, erasure): `tenant`'s position in
-- `name`. Not granted to readers, who could otherwise ask about any tenant.
CREATE FUNCTION tenant_projection_position(name text, tenant text) RETURNS bigint
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
REVOKE EXECUTE ON FUNCTION tenant_projection_position(text, text) FROM PUBLIC;

-- For the HTTP API: the tenant of the token whose SHA-256 is `digest` (as
-- analytics.token_tenant checks it) and its position in `name`; no row for a token that is
-- not valid. The API's login learns a tenant's position only with that tenant's token.
CREATE FUNCTION analytics.token_position(name text, digest text)
RETURNS TABLE (tenant text, "position" bigint)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
        SELECT t.tenant, tenant_projection_position(name, t.tenant)
        FROM (SELECT analytics.token_tenant(digest) AS tenant) t WHERE t.tenant IS NOT NULL
    $$;
REVOKE EXECUTE ON FUNCTION analytics.token_position(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION analytics.token_position(text, text) TO activity_reader;

-- For readers: the position the projection has folded the session's tenant's log up to
-- (0 before its first event); NULL without a tenant, or for a projection not installed.
-- The log's own positions are never shown to a reader.
CREATE OR REPLACE FUNCTION analytics.projection_position(name text) RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT tenant_projection_position(name, analytics.current_tenant()) $$;

-- Command status gives the event's tenant position.
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
        SELECT 'applied'::text, e.tenant_position, e.event_id, e.event_type, NULL::text, NULL::text,
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
