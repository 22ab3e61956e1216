-- Folds the log's positions (after, upto] into analytics.daily_activity, in segments that end
-- at each erasure, so that "distinct users" means the same live and in a replay.
CREATE OR REPLACE FUNCTION {{state}}.fold_daily_activity(after bigint, upto bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    lo bigint := after;
    f record;
BEGIN
    FOR f IN
        SELECT position, tenant_position, tenant, user_id FROM events
        WHERE position > after AND position <= upto AND event_type = 'user_forgotten'
        ORDER BY position
    LOOP
        PERFORM {{state}}.fold_daily_activity_segment(lo, f.position);
        UPDATE {{state}}.daily_activity_users
        SET user_id = '', forgotten_at = f.tenant_position
        WHERE tenant = f.tenant AND user_id = f.user_id AND forgotten_at = 0;
        lo := f.position;
    END LOOP;
    PERFORM {{state}}.fold_daily_activity_segment(lo, upto);
END
$$;

-- Activities in (lo, hi]: add their events, and count each user new to a group once.
CREATE OR REPLACE FUNCTION {{state}}.fold_daily_activity_segment(lo bigint, hi bigint)
RETURNS void LANGUAGE sql AS $$
    WITH acts AS (
        SELECT tenant, (occurred_at AT TIME ZONE 'UTC')::date AS day, activity_type, user_id
        FROM events
        WHERE position > lo AND position <= hi AND event_type = 'activity_recorded'
    ), counted AS (
        SELECT tenant, day, activity_type, count(*) AS events FROM acts GROUP BY 1, 2, 3
    ), new_users AS (
        INSERT INTO {{state}}.daily_activity_users (tenant, day, activity_type, user_id)
        SELECT DISTINCT tenant, day, activity_type, user_id FROM acts
        ON CONFLICT DO NOTHING
        RETURNING tenant, day, activity_type
    ), new_counts AS (
        SELECT tenant, day, activity_type, count(*) AS users FROM new_users GROUP BY 1, 2, 3
    )
    INSERT INTO {{analytics}}.daily_activity AS d (tenant, day, activity_type, events, users)
    SELECT c.tenant, c.day, c.activity_type, c.events, coalesce(n.users, 0)
    FROM counted c LEFT JOIN new_counts n USING (tenant, day, activity_type)
    ON CONFLICT (tenant, day, activity_type) DO UPDATE
    SET events = d.events + EXCLUDED.events, users = d.users + EXCLUDED.users;
$$;
