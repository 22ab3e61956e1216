-- The column goes only once its data migration is reverted (`migrate data down`), so the
-- way back is the way forward, in reverse, in batches.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM data_migrations WHERE direction = 'up') THEN
        RAISE EXCEPTION 'data migrations are applied: %',
            (SELECT string_agg(name, ', ') FROM data_migrations WHERE direction = 'up')
            USING HINT = 'revert them first with `activity-store migrate data down NAME`';
    END IF;
END
$$;
DROP TRIGGER dead_letters_command_type ON dead_letters;
DROP FUNCTION dead_letters_command_type();
DROP FUNCTION dead_letter_command_type(bytea);
ALTER TABLE dead_letters DROP COLUMN command_type;
DROP TABLE data_migrations;
