-- Dead letters written before migration 0031 get the command type their bytes name.
-- $1 < id <= $2: one batch, at most 10,000 rows.
UPDATE dead_letters SET command_type = dead_letter_command_type(raw)
WHERE id > $1 AND id <= $2
