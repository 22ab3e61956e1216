-- A fencing token per stream. An ingestor that becomes the stream's leader bumps the epoch
-- and every batch it commits checks it, so a leader whose lock session died (a restarted
-- server, a network cut) and whose lock a successor took commits nothing more, even if it
-- never noticed losing the lock.
ALTER TABLE ingest_checkpoints
    ADD COLUMN leader_epoch bigint NOT NULL DEFAULT 0;
