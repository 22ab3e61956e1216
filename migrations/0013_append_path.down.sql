-- The read side's writer grants and policies, as the projections' schema.sql made them.
GRANT USAGE ON SCHEMA analytics, projection_state TO activity_writer;
GRANT SELECT, INSERT, UPDATE ON projection_checkpoints TO activity_writer;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA analytics, projection_state TO activity_writer;
DO $$
DECLARE t record;
BEGIN
    FOR t IN SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'analytics' AND c.relkind = 'r' AND c.relrowsecurity
    LOOP
        EXECUTE format('CREATE POLICY projector_writes ON %I.%I FOR ALL TO activity_writer USING (true) WITH CHECK (true)',
            t.nspname, t.relname);
    END LOOP;
END
$$;
REVOKE ALL ON append_permits FROM activity_writer;
REVOKE ALL ON SEQUENCE events_position_seq FROM activity_writer;
GRANT USAGE, SELECT, UPDATE ON SEQUENCE events_position_seq TO activity_writer;
GRANT INSERT ON command_ledger TO activity_writer;
DROP TRIGGER events_append_path ON events;
DROP FUNCTION events_check_append();
DROP TRIGGER append_permits_used ON append_permits;
DROP FUNCTION append_permit_unused();
DROP FUNCTION begin_append(text[], uuid[]);
DROP TABLE append_permits;
