DROP TABLE ingest_partitions;
