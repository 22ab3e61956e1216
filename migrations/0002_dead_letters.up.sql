-- Every refused command, with its stable reason, a message naming the field and the rule,
-- where it came from, and its bytes exactly as received.
CREATE TABLE dead_letters (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reason         text        NOT NULL,
    field          text,
    message        text        NOT NULL,
    subject        text,
    stream_seq     bigint,
    delivery_count integer,
    command_id     uuid,
    tenant         text,
    raw            bytea       NOT NULL,
    received_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT dead_letters_reason_known CHECK (reason IN ('malformed', 'unknown_type', 'invalid_field',
        'unknown_tenant', 'tenant_exists', 'unknown_user', 'user_exists', 'tenant_mismatch',
        'out_of_range', 'too_large'))
);
CREATE INDEX dead_letters_reason_recorded ON dead_letters (reason, recorded_at);
-- A redelivery (a crash between commit and ack) is the same message again: same subject,
-- sequence and bytes. It is stored once.
CREATE UNIQUE INDEX dead_letters_once ON dead_letters (stream_seq, subject, md5(raw))
    WHERE stream_seq IS NOT NULL;
