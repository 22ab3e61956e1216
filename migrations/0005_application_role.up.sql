-- `activity_writer`: what the store's own processes need, and no more. Operators grant it to
-- the login role the store connects as. It may append to the log but never rewrite it.
-- Roles belong to the whole cluster, so creating it tolerates another database having done so.
DO $$
BEGIN
    CREATE ROLE activity_writer NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

GRANT SELECT, INSERT ON events, command_ledger, dead_letters TO activity_writer;
GRANT SELECT, INSERT, UPDATE, DELETE ON tenants, users TO activity_writer;
GRANT SELECT, INSERT, UPDATE ON projection_checkpoints TO activity_writer;
GRANT USAGE, SELECT, UPDATE ON SEQUENCE events_position_seq TO activity_writer;
GRANT EXECUTE ON FUNCTION create_event_partition(timestamptz) TO activity_writer;
