-- Data migrations: backfills over a table that run beside ingest and reads, in batches of at
-- most 10,000 rows, each batch one transaction that also moves the migration's cursor here,
-- so a killed run resumes after its last committed batch. `direction` is the way it last ran
-- (`up` or `down`); `finished_at` is set once it ran to the end that way.
CREATE TABLE data_migrations (
    name        text        PRIMARY KEY,
    direction   text        NOT NULL,
    cursor      bigint      NOT NULL DEFAULT 0,
    rows_done   bigint      NOT NULL DEFAULT 0,
    batches     bigint      NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    CONSTRAINT data_migrations_direction CHECK (direction IN ('up', 'down')),
    CONSTRAINT data_migrations_counts CHECK (cursor >= 0 AND rows_done >= 0 AND batches >= 0)
);

-- The first data migration's column: the command type a dead letter's bytes name, so
-- operators can find refused commands by type. New dead letters get it as they are written;
-- those written before are backfilled by the data migration `dead_letter_command_type`.
ALTER TABLE dead_letters ADD COLUMN command_type text;

-- The `type` a dead letter's bytes name, if they are UTF-8 JSON naming a plausible one; NULL
-- otherwise (malformed, cut at 64 KiB, or a type no command could have).
CREATE FUNCTION dead_letter_command_type(raw bytea) RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $$
DECLARE
    named text;
BEGIN
    named := convert_from(raw, 'UTF8')::jsonb ->> 'type';
    RETURN CASE WHEN named ~ '^[a-z_]{1,64}$' THEN named END;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;

CREATE FUNCTION dead_letters_command_type() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.command_type := dead_letter_command_type(NEW.raw);
    RETURN NEW;
END
$$;
CREATE TRIGGER dead_letters_command_type BEFORE INSERT ON dead_letters
    FOR EACH ROW EXECUTE FUNCTION dead_letters_command_type();
