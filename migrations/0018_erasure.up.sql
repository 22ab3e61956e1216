-- Erasure reaches the log through one sanctioned, audited path. The log stays append-only
-- for everyone else: the only rewrite its guard lets through is `erase_user_events`, run as
-- the log's owner under an erasure in progress, and it may only replace a row's user id with
-- that erasure's pseudonym and its data with the scrubbed forms below; positions, tenants,
-- types, times and ids stay, so counts survive anonymously and a replay builds the same views.
CREATE TABLE erasures (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant          text        NOT NULL,
    -- What the user's id became in the log: nothing derived from the id itself.
    pseudonym       text        NOT NULL UNIQUE,
    -- The position of the user_forgotten event: the log is scrubbed up to it.
    forgotten_at    bigint      NOT NULL,
    requested_at    timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    log_events      bigint      NOT NULL DEFAULT 0,
    dead_letters    bigint      NOT NULL DEFAULT 0,
    stream_messages bigint      NOT NULL DEFAULT 0,
    cache_entries   bigint      NOT NULL DEFAULT 0,
    read_model_rows bigint      NOT NULL DEFAULT 0,
    CONSTRAINT erasures_pseudonym_form CHECK (pseudonym ~ '^erased-[0-9a-f]{32}$')
);

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

-- Scrubs up to `max_rows` of the user's events at or before the erasure's user_forgotten
-- event (later ones belong to a new registration of the same id); returns how many. Called
-- again until it returns 0: each call is a short transaction that never blocks appends.
CREATE FUNCTION erase_user_events(p_pseudonym text, p_user text, max_rows integer)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    e erasures;
    n bigint;
BEGIN
    SELECT * INTO e FROM erasures WHERE pseudonym = p_pseudonym AND completed_at IS NULL;
    IF e IS NULL THEN
        RAISE EXCEPTION 'no erasure % in progress', p_pseudonym USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM set_config('activity.erasure', p_pseudonym, true);
    WITH batch AS (
        SELECT position, occurred_at FROM events
        WHERE tenant = e.tenant AND user_id = p_user AND position <= e.forgotten_at
        LIMIT max_rows
    )
    UPDATE events v
    SET user_id = p_pseudonym,
        data = CASE WHEN v.event_type IN ('user_registered', 'user_email_changed')
                    THEN '{"email": "erased@erased.invalid"}'::jsonb ELSE '{}'::jsonb END
    FROM batch b WHERE v.position = b.position AND v.occurred_at = b.occurred_at;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM set_config('activity.erasure', '', true);
    UPDATE erasures SET log_events = log_events + n WHERE id = e.id;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION erase_user_events(text, text, integer) FROM PUBLIC;
