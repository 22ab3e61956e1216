ALTER TABLE ingest_checkpoints DROP COLUMN leader_epoch;
