-- Months detached from the log, with where their archive went: what a rebuild will not fold
-- until they are attached again.
CREATE TABLE archived_months (
    month          text        PRIMARY KEY,
    rows           bigint      NOT NULL,
    first_position bigint,
    last_position  bigint,
    archive        text,
    detached_at    timestamptz NOT NULL DEFAULT now(),
    attached_at    timestamptz,
    CONSTRAINT archived_months_month CHECK (month ~ '^[0-9]{4}-(0[1-9]|1[0-2])$')
);
