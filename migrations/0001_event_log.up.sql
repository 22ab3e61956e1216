-- The event log: the one source of truth. Append-only, one partition a month (UTC).
-- Positions come from a sequence; appends are serialised (advisory lock in the store) so
-- position order is commit order. `tx_id` is kept for gap checks by readers.

CREATE SEQUENCE events_position_seq AS bigint NO CYCLE;

CREATE TABLE events (
    position        bigint      NOT NULL,
    event_id        uuid        NOT NULL,
    command_id      uuid        NOT NULL,
    tenant          text        NOT NULL,
    user_id         text,
    event_type      text        NOT NULL,
    activity_type   text,
    data            jsonb       NOT NULL,
    occurred_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    subject         text,
    stream_seq      bigint,
    delivery_count  integer,
    tx_id           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT events_tenant_slug CHECK (tenant ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    CONSTRAINT events_event_type_known CHECK (event_type IN
        ('tenant_created', 'user_registered', 'user_email_changed', 'activity_recorded', 'user_forgotten')),
    CONSTRAINT events_user_id_length CHECK (char_length(user_id) BETWEEN 1 AND 128),
    CONSTRAINT events_user_id_present CHECK ((user_id IS NULL) = (event_type = 'tenant_created')),
    CONSTRAINT events_activity_type_format CHECK (activity_type ~ '^[a-z0-9_.:-]{1,50}$'),
    CONSTRAINT events_activity_type_present CHECK ((activity_type IS NOT NULL) = (event_type = 'activity_recorded')),
    CONSTRAINT events_data_object CHECK (jsonb_typeof(data) = 'object'),
    -- Unique keys of a partitioned table must hold the partition key; positions are unique
    -- because only append_batch hands them out, from the sequence, under the append lock.
    -- Projectors read windows of positions through this index.
    CONSTRAINT events_pkey PRIMARY KEY (position, occurred_at)
) PARTITION BY RANGE (occurred_at);

-- One user's history, newest first: erasure, the write side and ad-hoc reads.
CREATE INDEX events_tenant_user_time ON events (tenant, user_id, occurred_at DESC);

-- Command ids applied, for ever: a unique index on `events` cannot do this, since it would
-- have to include `occurred_at`, which a producer's retry may change.
CREATE TABLE command_ledger (
    command_id  uuid        PRIMARY KEY,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- The log refuses UPDATE, DELETE and TRUNCATE from everyone, its owner included.
CREATE FUNCTION events_refuse_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_rewrite();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_rewrite();

-- Adds the partition of the month `month_start` falls in (UTC) unless it exists.
-- SECURITY DEFINER: the application role may add months without owning the log. Month
-- arithmetic runs in UTC whatever the caller's TimeZone. A table of that name that is not a
-- partition of `events` (a detached month) is an error, not a silent success.
-- Statement triggers are not inherited, so each partition gets its own TRUNCATE guard.
CREATE FUNCTION create_event_partition(month_start timestamptz) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO'
AS $$
DECLARE
    first_day timestamptz := date_trunc('month', month_start);
    part text := format('events_p%s', to_char(first_day, 'YYYYMM'));
    existing regclass := to_regclass(format('%I', part));
BEGIN
    IF existing IS NULL THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
            part, first_day, first_day + interval '1 month');
        EXECUTE format('CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON %I '
            'FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_rewrite()', part);
    ELSIF NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = existing AND inhparent = 'events'::regclass) THEN
        RAISE EXCEPTION 'table % exists but is not a partition of events; attach or rename it', part
            USING ERRCODE = 'duplicate_table';
    END IF;
    RETURN part;
END
$$;
REVOKE ALL ON FUNCTION create_event_partition(timestamptz) FROM PUBLIC;
