-- Folds the log's positions (after, upto] into analytics.activity_feed. Rows keep the
-- event's tenant position: what a reader sees is a place in its own tenant's log.
CREATE OR REPLACE FUNCTION {{state}}.fold_activity_feed(after bigint, upto bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {{analytics}}.activity_feed
        (tenant, user_id, event_id, activity_type, occurred_at, metadata, position)
    SELECT tenant, user_id, event_id, activity_type, occurred_at, data, tenant_position
    FROM events
    WHERE position > after AND position <= upto AND event_type = 'activity_recorded';

    -- An erasure removes the user's activities before it; later ones (a new registration
    -- of the same id) stay.
    DELETE FROM {{analytics}}.activity_feed f
    USING events e
    WHERE e.position > after AND e.position <= upto AND e.event_type = 'user_forgotten'
      AND f.tenant = e.tenant AND f.user_id = e.user_id AND f.position < e.tenant_position;
END
$$;
