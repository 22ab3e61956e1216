-- Commands may name the wire contract's version; one the store does not know is refused as
-- `unsupported_version`, never decided by another version's rules.
ALTER TABLE dead_letters
    DROP CONSTRAINT dead_letters_reason_known,
    ADD CONSTRAINT dead_letters_reason_known CHECK (reason IN ('malformed', 'unknown_type',
        'invalid_field', 'unknown_tenant', 'tenant_exists', 'unknown_user', 'user_exists',
        'tenant_mismatch', 'out_of_range', 'too_large', 'archived_month',
        'unsupported_version'));
