-- The roles are cluster-wide and may be granted elsewhere: they are kept.
DROP SCHEMA projection_state CASCADE;
DROP SCHEMA analytics CASCADE;
DELETE FROM projection_checkpoints;
