CREATE OR REPLACE FUNCTION analytics.current_tenant() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('activity.tenant', true), '') $$;
ALTER FUNCTION analytics.current_tenant() SECURITY INVOKER;
ALTER FUNCTION analytics.current_tenant() RESET search_path;
GRANT EXECUTE ON FUNCTION analytics.current_tenant() TO PUBLIC;
DROP TABLE reader_tenants;
