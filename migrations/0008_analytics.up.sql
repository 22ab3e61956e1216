-- The read side's home. `analytics` holds the read models readers query, each one a table
-- that its projection (projections/<name>/) creates with row-level security forced.
-- `projection_state` holds what folds need and readers must not see.
CREATE SCHEMA analytics;
CREATE SCHEMA projection_state;

-- Readers: NOLOGIN; operators grant it to login roles. It sees analytics rows only of the
-- tenant set with `SET activity.tenant = '<tenant>'` (or set_config), and nothing else.
-- Roles belong to the whole cluster: creating it tolerates another database (or a
-- concurrent migration) having done so.
DO $$
BEGIN
    CREATE ROLE activity_reader NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
GRANT USAGE ON SCHEMA analytics TO activity_reader;
GRANT USAGE ON SCHEMA analytics, projection_state TO activity_writer;

-- The tenant a reader's session or transaction is scoped to; NULL when none is set, which
-- matches no row, so a forgotten SET fails closed.
CREATE FUNCTION analytics.current_tenant() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('activity.tenant', true), '') $$;
GRANT EXECUTE ON FUNCTION analytics.current_tenant() TO activity_reader;

-- A projection's checkpoint, for readers: a cache fill records the checkpoint its row was
-- read at, in the same statement, to order itself against the projector's writes.
CREATE FUNCTION analytics.projection_position(name text) RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT position FROM projection_checkpoints WHERE projection = name $$;
REVOKE EXECUTE ON FUNCTION analytics.projection_position(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION analytics.projection_position(text) TO activity_reader;
