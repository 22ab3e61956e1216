-- Per-tenant activity schemas (data contracts): a JSON Schema for the metadata of one of a
-- tenant's activity types. Versions are numbered from 1 and never change once stored; ingest
-- holds commands to the newest. Tenants read theirs (row-level security), the ingestor reads
-- all, only the owner (the operator's `schemas put`) writes.
CREATE TABLE activity_schemas (
    tenant        text        NOT NULL REFERENCES tenants (tenant),
    activity_type text        NOT NULL,
    version       integer     NOT NULL,
    schema        jsonb       NOT NULL,
    -- Existing events the version refused when it was registered, and whether the operator
    -- registered it anyway.
    violations    bigint      NOT NULL DEFAULT 0,
    forced        boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    name        NOT NULL DEFAULT session_user,
    PRIMARY KEY (tenant, activity_type, version),
    CONSTRAINT activity_schemas_type CHECK (activity_type ~ '^[a-z0-9_.:-]{1,50}$'),
    CONSTRAINT activity_schemas_version CHECK (version >= 1),
    CONSTRAINT activity_schemas_object CHECK (jsonb_typeof(schema) = 'object'),
    CONSTRAINT activity_schemas_size CHECK (octet_length(schema::text) <= 65536),
    CONSTRAINT activity_schemas_violations CHECK (violations >= 0)
);

CREATE FUNCTION activity_schemas_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'schema version % of %/% is immutable', OLD.version, OLD.tenant, OLD.activity_type
        USING HINT = 'register a new version with `schemas put`';
END
$$;
CREATE TRIGGER activity_schemas_immutable BEFORE UPDATE ON activity_schemas
    FOR EACH ROW EXECUTE FUNCTION activity_schemas_immutable();

ALTER TABLE activity_schemas ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_reads ON activity_schemas FOR SELECT TO activity_reader
    USING (tenant = analytics.current_tenant());
CREATE POLICY ingest_reads ON activity_schemas FOR SELECT TO activity_writer USING (true);
GRANT SELECT ON activity_schemas TO activity_reader, activity_writer;

ALTER TABLE dead_letters
    DROP CONSTRAINT dead_letters_reason_known,
    ADD CONSTRAINT dead_letters_reason_known CHECK (reason IN ('malformed', 'unknown_type',
        'invalid_field', 'unknown_tenant', 'tenant_exists', 'unknown_user', 'user_exists',
        'tenant_mismatch', 'out_of_range', 'too_large', 'archived_month',
        'unsupported_version', 'schema_violation'));

-- A batch's view with the schemas it is held to, still one round trip: the view as before,
-- plus the current version for each (tenant, activity type) the batch's activities name.
CREATE FUNCTION ingest_view(
    p_stream text, p_lock_timeout text,
    p_tenants text[], p_commands uuid[], p_user_tenants text[], p_users text[],
    p_typed_tenants text[], p_types text[],
    OUT checkpoint_seq bigint, OUT checkpoint_epoch bigint,
    OUT applied_tenants text[], OUT applied_commands uuid[],
    OUT known_tenants text[],
    OUT known_user_tenants text[], OUT known_users text[],
    OUT schema_tenants text[], OUT schema_types text[], OUT schema_versions integer[])
LANGUAGE plpgsql
AS $$
BEGIN
    SELECT v.checkpoint_seq, v.checkpoint_epoch, v.applied_tenants, v.applied_commands,
           v.known_tenants, v.known_user_tenants, v.known_users
    INTO checkpoint_seq, checkpoint_epoch, applied_tenants, applied_commands,
         known_tenants, known_user_tenants, known_users
    FROM public.ingest_view(p_stream, p_lock_timeout, p_tenants, p_commands,
                            p_user_tenants, p_users) v;
    SELECT coalesce(array_agg(s.tenant), '{}'), coalesce(array_agg(s.activity_type), '{}'),
           coalesce(array_agg(s.version), '{}')
    INTO schema_tenants, schema_types, schema_versions
    FROM (SELECT DISTINCT ON (a.tenant, a.activity_type) a.tenant, a.activity_type, a.version
          FROM public.activity_schemas a
          JOIN (SELECT DISTINCT * FROM unnest(p_typed_tenants, p_types)) AS k(tenant, activity_type)
            ON a.tenant = k.tenant AND a.activity_type = k.activity_type
          ORDER BY a.tenant, a.activity_type, a.version DESC) s;
END
$$;
REVOKE ALL ON FUNCTION ingest_view(text, text, text[], uuid[], text[], text[], text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ingest_view(text, text, text[], uuid[], text[], text[], text[], text[]) TO activity_writer;
