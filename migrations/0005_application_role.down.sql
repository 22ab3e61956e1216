-- The role itself stays: it belongs to the cluster and other databases may use it.
REVOKE EXECUTE ON FUNCTION create_event_partition(timestamptz) FROM activity_writer;
REVOKE ALL ON SEQUENCE events_position_seq FROM activity_writer;
REVOKE ALL ON projection_checkpoints, tenants, users, dead_letters, command_ledger, events FROM activity_writer;
