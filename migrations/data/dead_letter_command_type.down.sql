-- Back to the form before: no command type recorded. $1 < id <= $2: one batch.
UPDATE dead_letters SET command_type = NULL
WHERE id > $1 AND id <= $2 AND command_type IS NOT NULL
