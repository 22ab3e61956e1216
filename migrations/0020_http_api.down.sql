DROP FUNCTION analytics.command_status(uuid);
DROP INDEX dead_letters_command;
DROP INDEX events_command;

CREATE OR REPLACE FUNCTION analytics.may_read(tenant text) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
        SELECT pg_has_role(session_user, 'activity_reader', 'MEMBER')
           AND EXISTS (
               SELECT 1 FROM reader_tenants r
               WHERE r.login = session_user AND r.tenant IN (may_read.tenant, '*'))
    $$;

CREATE OR REPLACE FUNCTION analytics.current_tenant() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
        SELECT s.tenant
        FROM (SELECT nullif(current_setting('activity.tenant', true), '') AS tenant) s
        WHERE EXISTS (
            SELECT 1 FROM reader_tenants r
            WHERE r.login = session_user AND r.tenant IN (s.tenant, '*')
        )
    $$;

DROP FUNCTION analytics.token_tenant(text);
DROP TABLE api_tokens;
-- The role is cluster-wide and may be granted elsewhere: it is kept.
