-- The last stream sequence each stream's ingestor committed, written in the batch's own
-- transaction. On start the consumer is recreated to deliver from the next sequence, so a
-- crash never reorders commands and recovery does not wait for JetStream's ack_wait.
CREATE TABLE ingest_checkpoints (
    stream     text        PRIMARY KEY,
    last_seq   bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ingest_checkpoints_last_seq_nonnegative CHECK (last_seq >= 0)
);
GRANT SELECT, INSERT, UPDATE ON ingest_checkpoints TO activity_writer;
