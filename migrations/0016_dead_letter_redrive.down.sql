DROP INDEX dead_letters_unresolved;
ALTER TABLE dead_letters
    DROP COLUMN resolution,
    DROP COLUMN resolved_at,
    DROP COLUMN redrives;
