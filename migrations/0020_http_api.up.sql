-- The HTTP API: tenant tokens, and command status for producers.
--
-- A token is a second way a session may read a tenant: besides a binding of its login in
-- reader_tenants, a valid token for the tenant, whose SHA-256 (hex) the session sets in
-- `activity.token`. Only logins in `activity_http_reader` (the API's) may scope a session by
-- token; the API's login is bound to no tenant, so even a fault in the server cannot read a
-- tenant whose token the request did not carry: row-level security checks the token itself.
-- The server sends the token's SHA-256, never the token, and the table keeps the SHA-256 of
-- that: a statement log opens nothing over HTTP, a copy of the table opens nothing at all.
-- Tokens are 256 random bits, so fast digests are enough.
DO $$
BEGIN
    CREATE ROLE activity_http_reader NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
GRANT activity_reader TO activity_http_reader;

CREATE TABLE api_tokens (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant     text        NOT NULL,
    name       text        NOT NULL DEFAULT '',
    hash       bytea       NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    revoked_at timestamptz,
    CONSTRAINT api_tokens_tenant CHECK (tenant ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    CONSTRAINT api_tokens_name CHECK (char_length(name) <= 200),
    CONSTRAINT api_tokens_hash CHECK (octet_length(hash) = 32)
);
REVOKE ALL ON api_tokens FROM PUBLIC;

-- The tenant of the token whose SHA-256 is `digest` (64 hex digits) if it is valid (known,
-- not revoked, not expired) and this session's login may scope by token; NULL otherwise,
-- and for anything that is not such a digest.
CREATE FUNCTION analytics.token_tenant(digest text) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
        SELECT t.tenant FROM api_tokens t
        WHERE token_tenant.digest ~ '^[0-9a-f]{64}$'
          AND pg_has_role(session_user, 'activity_http_reader', 'MEMBER')
          AND t.hash = sha256(decode(token_tenant.digest, 'hex'))
          AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())
    $$;
REVOKE EXECUTE ON FUNCTION analytics.token_tenant(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION analytics.token_tenant(text) TO activity_reader;

CREATE OR REPLACE FUNCTION analytics.current_tenant() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
        SELECT s.tenant
        FROM (SELECT nullif(current_setting('activity.tenant', true), '') AS tenant,
                     nullif(current_setting('activity.token', true), '') AS token) s
        WHERE EXISTS (
                SELECT 1 FROM reader_tenants r
                WHERE r.login = session_user AND r.tenant IN (s.tenant, '*'))
           OR coalesce(analytics.token_tenant(s.token) = s.tenant, false)
    $$;

CREATE OR REPLACE FUNCTION analytics.may_read(tenant text) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
        SELECT pg_has_role(session_user, 'activity_reader', 'MEMBER')
           AND (EXISTS (
                   SELECT 1 FROM reader_tenants r
                   WHERE r.login = session_user AND r.tenant IN (may_read.tenant, '*'))
                OR coalesce(analytics.token_tenant(
                       nullif(current_setting('activity.token', true), '')) = may_read.tenant,
                   false))
    $$;

-- Command status: found by id in the log, else in the ledger (its month detached), else
-- among the dead letters. One index each; the log's is per partition, off the ledger's
-- path (the append path writes it as part of the COPY).
-- On a large log, build it first per partition (CREATE INDEX CONCURRENTLY on each, then
-- CREATE INDEX events_command ON ONLY events and ATTACH each): this one then finds it.
CREATE INDEX IF NOT EXISTS events_command ON events (command_id);
CREATE INDEX dead_letters_command ON dead_letters (tenant, command_id) WHERE command_id IS NOT NULL;

-- What became of command `command` of the session's tenant (the rule row-level security
-- applies): one row, 'applied' or 'refused'; none if the store has not seen it. An applied
-- command wins over refusals of the same id (a redrive, or a corrected republish).
CREATE FUNCTION analytics.command_status(command uuid)
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
REVOKE EXECUTE ON FUNCTION analytics.command_status(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION analytics.command_status(uuid) TO activity_reader;
