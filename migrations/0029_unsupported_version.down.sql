-- Refused, not lost: dead letters of a later contract version must be redriven (once a
-- store that knows it runs) or purged before the reason can go.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM dead_letters WHERE reason = 'unsupported_version') THEN
        RAISE EXCEPTION 'dead letters with reason unsupported_version exist'
            USING HINT = 'redrive them with a store that knows their version, or purge them, before migrating down';
    END IF;
END
$$;
ALTER TABLE dead_letters
    DROP CONSTRAINT dead_letters_reason_known,
    ADD CONSTRAINT dead_letters_reason_known CHECK (reason IN ('malformed', 'unknown_type',
        'invalid_field', 'unknown_tenant', 'tenant_exists', 'unknown_user', 'user_exists',
        'tenant_mismatch', 'out_of_range', 'too_large', 'archived_month'));
