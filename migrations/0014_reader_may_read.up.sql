-- Whether this session's login may read `tenant`: the rule row-level security applies
-- (a binding in reader_tenants for the session user, or '*'), asked in one statement so a
-- cache hit can be held to the same rule as a SQL read without reading the table.
CREATE FUNCTION analytics.may_read(tenant text) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
        SELECT pg_has_role(session_user, 'activity_reader', 'MEMBER')
           AND EXISTS (
               SELECT 1 FROM reader_tenants r
               WHERE r.login = session_user AND r.tenant IN (may_read.tenant, '*'))
    $$;
REVOKE EXECUTE ON FUNCTION analytics.may_read(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION analytics.may_read(text) TO activity_reader;
