-- How many partitions commands are routed to on their way in: 1 is the one stream of
-- before; P > 1 is a NATS subject mapping (`<prefix>.*` to `<prefix>.p{{partition(P,1)}}.*`,
-- FNV-1a of the tenant modulo P) and P streams, each with its own consumer, ingest lead and
-- epoch-fenced checkpoint, which running instances divide between them. Written by the
-- owner at install (`up` gives a new store P = S); every instance reads it, so none can
-- disagree with another on where a tenant's commands are.
CREATE TABLE ingest_partitions (
    only_one   boolean PRIMARY KEY DEFAULT true CHECK (only_one),
    partitions integer NOT NULL DEFAULT 1
        CONSTRAINT ingest_partitions_range CHECK (partitions BETWEEN 1 AND 1024)
);
INSERT INTO ingest_partitions DEFAULT VALUES;
REVOKE ALL ON ingest_partitions FROM PUBLIC;
GRANT SELECT ON ingest_partitions TO activity_writer;
