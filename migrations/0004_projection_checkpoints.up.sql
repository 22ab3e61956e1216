-- How far each projection has folded the log; written in the fold's own transaction.
CREATE TABLE projection_checkpoints (
    projection text        PRIMARY KEY,
    version    integer     NOT NULL,
    position   bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT projection_checkpoints_version_positive CHECK (version > 0),
    CONSTRAINT projection_checkpoints_position_nonnegative CHECK (position >= 0)
);
