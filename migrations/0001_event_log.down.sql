DROP FUNCTION create_event_partition(timestamptz);
DROP TABLE command_ledger;
DROP TABLE events;
DROP FUNCTION events_refuse_rewrite();
DROP SEQUENCE events_position_seq;
