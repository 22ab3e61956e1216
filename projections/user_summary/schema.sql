-- analytics.user_summary: one row per registered user the store still knows.
CREATE TABLE {{analytics}}.user_summary (
    tenant                 text        NOT NULL,
    user_id                text        NOT NULL,
    name                   text,
    email                  text        NOT NULL,
    -- Over the user's activities; NULL until the first one.
    first_seen             timestamptz,
    last_seen              timestamptz,
    events                 bigint      NOT NULL DEFAULT 0,
    -- Of the latest activity by occurred_at, ties broken by position.
    last_activity_type     text,
    last_activity_position bigint,
    -- The last position, in the tenant's log, this row reflects.
    position               bigint      NOT NULL,
    PRIMARY KEY (tenant, user_id)
);

ALTER TABLE {{analytics}}.user_summary ENABLE ROW LEVEL SECURITY;
ALTER TABLE {{analytics}}.user_summary FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_reads ON {{analytics}}.user_summary FOR SELECT TO activity_reader
    USING (tenant = (SELECT analytics.current_tenant()));
-- The role that installs the projection owns the table and folds into it; FORCE applies
-- row-level security to owners too, so it needs a policy of its own.
CREATE POLICY owner_folds ON {{analytics}}.user_summary FOR ALL TO CURRENT_USER
    USING (true) WITH CHECK (true);
GRANT SELECT ON {{analytics}}.user_summary TO activity_reader;
