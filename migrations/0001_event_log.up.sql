CREATE SEQUENCE events_position_seq AS bigint;
CREATE TABLE events (
    position bigint, event_id uuid, command_id uuid, tenant text, user_id text, event_type text,
    activity_type text, data jsonb, occurred_at timestamptz NOT NULL, received_at timestamptz,
    recorded_at timestamptz, subject text, stream_seq bigint, delivery_count integer,
    tx_id xid8 DEFAULT pg_current_xact_id()
) PARTITION BY RANGE (occurred_at);
CREATE TABLE command_ledger (command_id uuid PRIMARY KEY, recorded_at timestamptz DEFAULT now());
CREATE FUNCTION create_event_partition(month_start timestamptz) RETURNS text LANGUAGE plpgsql AS $$
DECLARE name text := format('events_p%s', to_char(month_start AT TIME ZONE 'UTC', 'YYYYMM'));
BEGIN
  EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
    name, month_start, month_start + interval '1 month');
  RETURN name;
END $$;
