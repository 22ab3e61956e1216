-- Dead letters cost bounded space whatever arrives: `raw` keeps at most the first 64 KiB
-- (the largest command accepted, so every refusal of a command within the limit keeps all
-- of it), with the full length and SHA-256 beside it. `stream_created` is the identity of
-- the stream the message came from, so a recreated stream's message at an old sequence is a
-- new dead letter, not a repeat of the old one. `archived_month` is a command for a month
-- whose partition was detached.
ALTER TABLE dead_letters
    ADD COLUMN raw_length     bigint,
    ADD COLUMN raw_sha256     bytea,
    ADD COLUMN stream_created timestamptz;
UPDATE dead_letters SET raw_length = length(raw), raw_sha256 = sha256(raw);
UPDATE dead_letters SET raw = substring(raw FROM 1 FOR 65536) WHERE length(raw) > 65536;
ALTER TABLE dead_letters
    ALTER COLUMN raw_length SET NOT NULL,
    ALTER COLUMN raw_sha256 SET NOT NULL,
    ADD CONSTRAINT dead_letters_raw_bounded CHECK (length(raw) <= 65536 AND length(raw) <= raw_length),
    ADD CONSTRAINT dead_letters_raw_sha256 CHECK (length(raw_sha256) = 32),
    DROP CONSTRAINT dead_letters_reason_known,
    ADD CONSTRAINT dead_letters_reason_known CHECK (reason IN ('malformed', 'unknown_type',
        'invalid_field', 'unknown_tenant', 'tenant_exists', 'unknown_user', 'user_exists',
        'tenant_mismatch', 'out_of_range', 'too_large', 'archived_month'));
DROP INDEX dead_letters_once;
-- A redelivery is the same message again: same stream, sequence, subject and bytes.
CREATE UNIQUE INDEX dead_letters_once
    ON dead_letters (stream_seq, subject, raw_sha256, stream_created) NULLS NOT DISTINCT
    WHERE stream_seq IS NOT NULL;
