-- The read side's old writer grants come back with the projections' next install.
GRANT USAGE ON SCHEMA analytics, projection_state TO activity_writer;
GRANT SELECT, INSERT, UPDATE ON projection_checkpoints TO activity_writer;
REVOKE ALL ON append_permits FROM activity_writer;
REVOKE ALL ON SEQUENCE events_position_seq FROM activity_writer;
GRANT USAGE, SELECT, UPDATE ON SEQUENCE events_position_seq TO activity_writer;
GRANT INSERT ON command_ledger TO activity_writer;
DROP TRIGGER events_append_path ON events;
DROP FUNCTION events_check_append();
DROP FUNCTION begin_append(text[], uuid[]);
DROP TABLE append_permits;
