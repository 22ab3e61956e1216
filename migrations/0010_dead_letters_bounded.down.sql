-- Prefixes cut by the up migration stay cut: their full bytes are gone.
DROP INDEX dead_letters_once;
DELETE FROM dead_letters WHERE reason = 'archived_month';
-- Before, one sequence, subject and body was one dead letter whatever stream it came from.
DELETE FROM dead_letters d USING dead_letters e
WHERE d.stream_seq = e.stream_seq AND d.subject IS NOT DISTINCT FROM e.subject
  AND d.raw_sha256 = e.raw_sha256 AND d.id > e.id;
ALTER TABLE dead_letters
    DROP CONSTRAINT dead_letters_reason_known,
    ADD CONSTRAINT dead_letters_reason_known CHECK (reason IN ('malformed', 'unknown_type', 'invalid_field',
        'unknown_tenant', 'tenant_exists', 'unknown_user', 'user_exists', 'tenant_mismatch',
        'out_of_range', 'too_large')),
    DROP CONSTRAINT dead_letters_raw_bounded,
    DROP CONSTRAINT dead_letters_raw_sha256,
    DROP COLUMN raw_length,
    DROP COLUMN raw_sha256,
    DROP COLUMN stream_created;
CREATE UNIQUE INDEX dead_letters_once ON dead_letters (stream_seq, subject, md5(raw))
    WHERE stream_seq IS NOT NULL;
