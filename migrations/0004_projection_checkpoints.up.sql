CREATE TABLE projection_checkpoints (projection text PRIMARY KEY, version integer, position bigint);
