DROP FUNCTION analytics.projection_epoch(text);
ALTER TABLE projection_checkpoints DROP COLUMN epoch;
