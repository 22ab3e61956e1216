-- A projection's epoch: bumped whenever its tables are replaced whole (installed again, or a
-- rebuild swapped in). Cache entries carry the epoch they were read at, and a reader serves
-- an entry only of the current epoch: a fill that read the old tables can never be served
-- after a swap, even at the same log position.
ALTER TABLE projection_checkpoints ADD COLUMN epoch integer NOT NULL DEFAULT 0;

CREATE FUNCTION analytics.projection_epoch(name text) RETURNS integer
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT epoch FROM projection_checkpoints WHERE projection = name $$;
REVOKE EXECUTE ON FUNCTION analytics.projection_epoch(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION analytics.projection_epoch(text) TO activity_reader;
