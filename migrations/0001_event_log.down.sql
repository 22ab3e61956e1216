DROP FUNCTION create_event_partition(timestamptz); DROP TABLE command_ledger; DROP TABLE events; DROP SEQUENCE events_position_seq;
