-- Every event records the version of its payload's shape. What is stored is never rewritten:
-- readers see the current shape through upcasters, one per (type, version -> version + 1).
-- The column's default (1) is every event written before: adding it rewrites nothing.
ALTER TABLE events ADD COLUMN schema_version smallint NOT NULL DEFAULT 1;

-- An erasure may scrub an event's payload, never change which shape it is.
CREATE FUNCTION events_keep_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'an event''s schema_version never changes (position %)', OLD.position;
END
$$;
CREATE TRIGGER events_keep_version BEFORE UPDATE ON events
    FOR EACH ROW WHEN (OLD.schema_version IS DISTINCT FROM NEW.schema_version)
    EXECUTE FUNCTION events_keep_version();

-- The shape each event type is written in today.
CREATE FUNCTION event_schema_version(event_type text) RETURNS smallint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT (CASE event_type WHEN 'user_registered' THEN 2 ELSE 1 END)::smallint $$;

-- user_registered 1 -> 2: the name a user gave is a display name (free text, not a legal
-- name), and is called so: `name` becomes `display_name`. An erased payload has neither.
CREATE FUNCTION upcast_user_registered_1(data jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
        SELECT CASE WHEN data ? 'name'
            THEN (data - 'name') || jsonb_build_object('display_name', data->'name')
            ELSE data END
    $$;

-- Events that could not be upcast, by the fold that met them: skipped while folding live,
-- kept here with their reason; a rebuild refuses to swap past one.
CREATE TABLE event_upcast_failures (
    position       bigint      PRIMARY KEY,
    event_type     text        NOT NULL,
    schema_version smallint    NOT NULL,
    reason         text        NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);

-- Every known path to today's shape, one line per (type, stored version), the steps
-- composed: NULL where there is none. Steps are total over JSON objects, so for an object
-- payload this never raises; inlined into the view, it costs no function call per row.
CREATE FUNCTION upcast_known(kind text, version smallint, data jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
        SELECT CASE
            WHEN kind = 'user_registered' AND version = 1 THEN upcast_user_registered_1(data)
        END
    $$;

-- The slow path, for what upcast_known cannot take (a version no path starts from; a
-- payload that is not an object or a step that raises, which the log's rules and total
-- steps should make impossible): NULL and a row in
-- event_upcast_failures; with `activity.strict_upcast` on (rebuilds), an error naming the
-- position and the reason. The log's owner folds and rebuilds; no one else may call it.
CREATE FUNCTION upcast_event(pos bigint, kind text, version smallint, data jsonb)
    RETURNS jsonb LANGUAGE plpgsql VOLATILE
    AS $$
DECLARE
    target smallint := event_schema_version(kind);
    d jsonb;
BEGIN
    BEGIN
        IF version = target THEN
            RETURN data;
        END IF;
        IF jsonb_typeof(data) IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION 'the payload of % version % is not a JSON object', kind, version;
        END IF;
        d := upcast_known(kind, version, data);
        IF d IS NULL THEN
            RAISE EXCEPTION 'unknown version % of % (this store writes %)', version, kind, target;
        END IF;
        RETURN d;
    EXCEPTION WHEN others THEN
        IF current_setting('activity.strict_upcast', true) = 'on' THEN
            RAISE EXCEPTION 'the event at position % (% version %) cannot be upcast: %',
                pos, kind, version, SQLERRM;
        END IF;
        INSERT INTO event_upcast_failures (position, event_type, schema_version, reason)
        VALUES (pos, kind, version, SQLERRM) ON CONFLICT (position) DO NOTHING;
        RETURN NULL;
    END;
END
$$;

-- The log as readers fold it: every column, the payload in today's shape (NULL for an event
-- that cannot be upcast). An event already in today's shape costs a comparison; one on a
-- known path, the inlined steps; only the rest takes the slow path.
CREATE VIEW events_current AS
SELECT e.position, e.event_id, e.command_id, e.tenant, e.user_id, e.event_type,
       e.activity_type, e.occurred_at, e.received_at, e.recorded_at, e.subject, e.stream_seq,
       e.delivery_count, e.tx_id, e.tenant_position, e.schema_version,
       CASE WHEN e.schema_version = event_schema_version(e.event_type) THEN e.data
            ELSE coalesce(
                CASE WHEN jsonb_typeof(e.data) = 'object'
                     THEN upcast_known(e.event_type, e.schema_version, e.data) END,
                upcast_event(e.position, e.event_type, e.schema_version, e.data))
       END AS data
FROM events e;
REVOKE ALL ON FUNCTION upcast_event(bigint, text, smallint, jsonb) FROM PUBLIC;
