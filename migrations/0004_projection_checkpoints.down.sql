DROP TABLE projection_checkpoints;
