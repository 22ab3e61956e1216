-- Tenants stay where they are: the log's guard as 0018 left it.
DROP FUNCTION move_tenant(text, integer);
CREATE OR REPLACE FUNCTION events_refuse_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    erasing text := nullif(current_setting('activity.erasure', true), '');
BEGIN
    IF TG_OP = 'UPDATE' AND erasing IS NOT NULL
       AND pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = 'events'::regclass), 'USAGE')
       AND EXISTS (SELECT 1 FROM erasures WHERE pseudonym = erasing AND completed_at IS NULL)
       AND NEW.user_id = erasing
       AND NEW.data IN ('{}'::jsonb, '{"email": "erased@erased.invalid"}'::jsonb)
       AND (NEW.position, NEW.event_id, NEW.command_id, NEW.tenant, NEW.event_type,
            NEW.activity_type, NEW.occurred_at, NEW.received_at, NEW.recorded_at,
            NEW.subject, NEW.stream_seq, NEW.delivery_count, NEW.tx_id)
           IS NOT DISTINCT FROM
           (OLD.position, OLD.event_id, OLD.command_id, OLD.tenant, OLD.event_type,
            OLD.activity_type, OLD.occurred_at, OLD.received_at, OLD.recorded_at,
            OLD.subject, OLD.stream_seq, OLD.delivery_count, OLD.tx_id)
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'the event log is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
