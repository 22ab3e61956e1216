-- analytics.activity_feed: one row per recorded activity of a user the store still knows.
CREATE TABLE {{analytics}}.activity_feed (
    tenant        text        NOT NULL,
    user_id       text        NOT NULL,
    event_id      uuid        NOT NULL,
    activity_type text        NOT NULL,
    occurred_at   timestamptz NOT NULL,
    metadata      jsonb       NOT NULL,
    -- The event's position in its tenant's log.
    position      bigint      NOT NULL,
    PRIMARY KEY (tenant, event_id)
);
-- A user's feed, newest first, ties by event id: the order pages are cut in (keyset on
-- both columns, so a page after a cursor starts where the index says, never at an offset).
CREATE INDEX activity_feed_user_time ON {{analytics}}.activity_feed (tenant, user_id, occurred_at DESC, event_id DESC);
-- A tenant's feed, in the same order.
CREATE INDEX activity_feed_tenant_time ON {{analytics}}.activity_feed (tenant, occurred_at DESC, event_id DESC);
-- Metadata containment (`metadata @> '{"ip": "10.0.0.1"}'`); the tenant is a filter on top.
-- (A btree_gin index on (tenant, metadata) was measured: the planner prefers a sequential
-- scan to it, since it walks the tenant's whole posting list.)
CREATE INDEX activity_feed_metadata ON {{analytics}}.activity_feed USING gin (metadata jsonb_path_ops);

ALTER TABLE {{analytics}}.activity_feed ENABLE ROW LEVEL SECURITY;
ALTER TABLE {{analytics}}.activity_feed FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_reads ON {{analytics}}.activity_feed FOR SELECT TO activity_reader
    USING (tenant = (SELECT analytics.current_tenant()));
-- The role that installs the projection owns the table and folds into it; FORCE applies
-- row-level security to owners too, so it needs a policy of its own.
CREATE POLICY owner_folds ON {{analytics}}.activity_feed FOR ALL TO CURRENT_USER
    USING (true) WITH CHECK (true);
GRANT SELECT ON {{analytics}}.activity_feed TO activity_reader;
