ALTER TABLE ingest_checkpoints DROP COLUMN stream_created, DROP COLUMN resets;
