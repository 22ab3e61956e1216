DROP TABLE ingest_checkpoints;
