-- analytics.daily_activity: per tenant, UTC day and activity type.
CREATE TABLE {{analytics}}.daily_activity (
    tenant        text   NOT NULL,
    day           date   NOT NULL,
    activity_type text   NOT NULL,
    events        bigint NOT NULL,
    users         bigint NOT NULL,
    PRIMARY KEY (tenant, day, activity_type)
);

-- Who was counted in `users`, so a user is counted once per group. On erasure the user's
-- id is replaced by the erasure's tenant position: the count stays, the person is gone.
CREATE TABLE {{state}}.daily_activity_users (
    tenant        text   NOT NULL,
    day           date   NOT NULL,
    activity_type text   NOT NULL,
    user_id       text   NOT NULL,
    forgotten_at  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, day, activity_type, user_id, forgotten_at)
);
CREATE INDEX daily_activity_users_user ON {{state}}.daily_activity_users (tenant, user_id);

ALTER TABLE {{analytics}}.daily_activity ENABLE ROW LEVEL SECURITY;
ALTER TABLE {{analytics}}.daily_activity FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_reads ON {{analytics}}.daily_activity FOR SELECT TO activity_reader
    USING (tenant = (SELECT analytics.current_tenant()));
-- The role that installs the projection owns the table and folds into it; FORCE applies
-- row-level security to owners too, so it needs a policy of its own.
CREATE POLICY owner_folds ON {{analytics}}.daily_activity FOR ALL TO CURRENT_USER
    USING (true) WITH CHECK (true);
GRANT SELECT ON {{analytics}}.daily_activity TO activity_reader;
