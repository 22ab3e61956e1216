DROP FUNCTION scrub_erased_rows(regclass);
ALTER TABLE archived_months DROP COLUMN tenants, DROP COLUMN erased_through;
DROP INDEX erasures_tenant_digest;
ALTER TABLE erasures
    DROP CONSTRAINT erasures_digest_length,
    DROP COLUMN user_digest,
    DROP COLUMN detached_events,
    DROP COLUMN stream_left,
    DROP COLUMN archives;
DROP FUNCTION erasure_digest(text, text);
