CREATE TABLE dead_letters (id bigint GENERATED ALWAYS AS IDENTITY, reason text, message text, raw bytea, received_at timestamptz);
