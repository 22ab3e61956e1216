-- Folds the log's positions (after, upto] into analytics.user_summary, in segments that end
-- at each erasure (an erased id may be registered again later in the same window). Rows
-- keep tenant positions: what a reader sees is a place in its own tenant's log.
CREATE OR REPLACE FUNCTION {{state}}.fold_user_summary(after bigint, upto bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    lo bigint := after;
    f record;
BEGIN
    FOR f IN
        SELECT position, tenant, user_id FROM events
        WHERE position > after AND position <= upto AND event_type = 'user_forgotten'
        ORDER BY position
    LOOP
        PERFORM {{state}}.fold_user_summary_segment(lo, f.position);
        DELETE FROM {{analytics}}.user_summary WHERE tenant = f.tenant AND user_id = f.user_id;
        lo := f.position;
    END LOOP;
    PERFORM {{state}}.fold_user_summary_segment(lo, upto);
END
$$;

-- Registrations, then email changes, then activities in (lo, hi]: within a segment a user is
-- registered before anything else happens to them. Payloads are read in today's shape
-- (`events_current`): one that cannot be upcast is skipped here and kept, with its reason,
-- in event_upcast_failures.
CREATE OR REPLACE FUNCTION {{state}}.fold_user_summary_segment(lo bigint, hi bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {{analytics}}.user_summary (tenant, user_id, name, email, position)
    SELECT tenant, user_id, data->>'display_name', data->>'email', tenant_position
    FROM events_current
    WHERE position > lo AND position <= hi AND event_type = 'user_registered'
      AND data IS NOT NULL;

    UPDATE {{analytics}}.user_summary s
    SET email = c.email, position = greatest(s.position, c.position)
    FROM (
        SELECT DISTINCT ON (tenant, user_id) tenant, user_id, data->>'email' AS email,
               tenant_position AS position
        FROM events
        WHERE position > lo AND position <= hi AND event_type = 'user_email_changed'
        ORDER BY tenant, user_id, position DESC
    ) c
    WHERE s.tenant = c.tenant AND s.user_id = c.user_id;

    WITH acts AS (
        SELECT tenant, user_id, occurred_at, tenant_position AS position, activity_type
        FROM events
        WHERE position > lo AND position <= hi AND event_type = 'activity_recorded'
    ), agg AS (
        SELECT tenant, user_id, min(occurred_at) AS first_seen, count(*) AS n,
               max(position) AS max_position
        FROM acts GROUP BY 1, 2
    ), latest AS (
        SELECT DISTINCT ON (tenant, user_id) tenant, user_id, occurred_at, position, activity_type
        FROM acts ORDER BY tenant, user_id, occurred_at DESC, position DESC
    ), merged AS (
        SELECT a.tenant, a.user_id, a.first_seen, a.n, a.max_position,
               l.occurred_at, l.position AS last_position, l.activity_type
        FROM agg a JOIN latest l USING (tenant, user_id)
    )
    UPDATE {{analytics}}.user_summary s
    SET first_seen = least(s.first_seen, m.first_seen),
        events = s.events + m.n,
        last_seen = CASE WHEN s.last_seen IS NULL
            OR (m.occurred_at, m.last_position) > (s.last_seen, s.last_activity_position)
            THEN m.occurred_at ELSE s.last_seen END,
        last_activity_type = CASE WHEN s.last_seen IS NULL
            OR (m.occurred_at, m.last_position) > (s.last_seen, s.last_activity_position)
            THEN m.activity_type ELSE s.last_activity_type END,
        last_activity_position = CASE WHEN s.last_seen IS NULL
            OR (m.occurred_at, m.last_position) > (s.last_seen, s.last_activity_position)
            THEN m.last_position ELSE s.last_activity_position END,
        position = greatest(s.position, m.max_position)
    FROM merged m
    WHERE s.tenant = m.tenant AND s.user_id = m.user_id;
END
$$;
