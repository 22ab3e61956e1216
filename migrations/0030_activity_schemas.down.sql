-- Refused, not lost: schema violations must be redriven or purged before the reason can go.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM dead_letters WHERE reason = 'schema_violation') THEN
        RAISE EXCEPTION 'dead letters with reason schema_violation exist'
            USING HINT = 'redrive or purge them before migrating down';
    END IF;
END
$$;
ALTER TABLE dead_letters
    DROP CONSTRAINT dead_letters_reason_known,
    ADD CONSTRAINT dead_letters_reason_known CHECK (reason IN ('malformed', 'unknown_type',
        'invalid_field', 'unknown_tenant', 'tenant_exists', 'unknown_user', 'user_exists',
        'tenant_mismatch', 'out_of_range', 'too_large', 'archived_month',
        'unsupported_version'));
DROP FUNCTION ingest_view(text, text, text[], uuid[], text[], text[], text[], text[]);
DROP TABLE activity_schemas;
DROP FUNCTION activity_schemas_immutable();
