-- The identity of the stream a checkpoint belongs to: its creation time, as JetStream
-- reports it. A stream deleted and created again restarts its sequences at 1; a checkpoint
-- that is only a sequence would then pass over every new message. `resets` counts how often
-- the ingestor found the stream new, purged or older than its checkpoint.
ALTER TABLE ingest_checkpoints
    ADD COLUMN stream_created timestamptz,
    ADD COLUMN resets bigint NOT NULL DEFAULT 0;
