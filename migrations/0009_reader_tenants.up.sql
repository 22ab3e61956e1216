-- Which tenants each login may read. `activity.tenant` only scopes a session to a tenant the
-- session's login is bound to here; '*' binds a trusted service to every tenant. Without a
-- binding, a reader sees nothing, whatever tenant it sets.
CREATE TABLE reader_tenants (
    login  name NOT NULL,
    tenant text NOT NULL,
    PRIMARY KEY (login, tenant),
    CONSTRAINT reader_tenants_tenant CHECK (tenant = '*' OR tenant ~ '^[a-z0-9][a-z0-9_-]{0,62}$')
);

-- The role that installs the store reads every tenant (the query CLI runs as it).
INSERT INTO reader_tenants (login, tenant) VALUES (CURRENT_USER, '*');

-- The tenant row-level security lets this session read: the one it set, if its login (the
-- session user, whatever role it has switched to) is bound to it; NULL, and so no rows,
-- otherwise.
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
REVOKE EXECUTE ON FUNCTION analytics.current_tenant() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION analytics.current_tenant() TO activity_reader;
