-- Erasures that outlive the log they scrubbed. An erasure keeps a digest of the tenant and
-- user it erased (SHA-256 under a fixed domain prefix; the id itself is kept nowhere), so
-- rows of that user that come back later, from an archive attached again or a month that
-- was detached when the erasure ran, are scrubbed before anyone can read them. Erasures
-- recorded before this migration have no digest and cannot be applied again.
CREATE FUNCTION erasure_digest(p_tenant text, p_user text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN sha256(convert_to('activity-store erasure', 'UTF8') || '\x00'::bytea
              || convert_to(p_tenant, 'UTF8') || '\x00'::bytea || convert_to(p_user, 'UTF8'));

ALTER TABLE erasures
    ADD COLUMN user_digest     bytea,
    -- Rows scrubbed in months detached from the log but still in the database.
    ADD COLUMN detached_events bigint   NOT NULL DEFAULT 0,
    -- Stream sequences still holding the user that the erasure could not remove.
    ADD COLUMN stream_left     bigint[] NOT NULL DEFAULT '{}',
    -- Archives (manifests) written before the erasure that may hold the tenant's events.
    ADD COLUMN archives        text[]   NOT NULL DEFAULT '{}',
    ADD CONSTRAINT erasures_digest_length CHECK (user_digest IS NULL OR length(user_digest) = 32);
CREATE INDEX erasures_tenant_digest ON erasures (tenant, user_digest) WHERE user_digest IS NOT NULL;

-- Which tenants a detached month holds, and the last erasure its archive obeys.
ALTER TABLE archived_months
    ADD COLUMN tenants        text[],
    ADD COLUMN erased_through bigint NOT NULL DEFAULT 0;

-- Applies every erasure with a digest to the rows of `p_table`, a table shaped like
-- `events` that is not part of the log (an archive being attached or rewritten, a detached
-- month): a row of an erased user at or before the erasure gets its pseudonym and scrubbed
-- data, exactly as `erase_user_events` leaves the log. Returns the rows scrubbed.
CREATE FUNCTION scrub_erased_rows(p_table regclass) RETURNS bigint
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    IF p_table = 'events'::regclass
       OR EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = p_table AND inhparent = 'events'::regclass) THEN
        RAISE EXCEPTION '% is part of the log: erase_user_events scrubs the log', p_table
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format(
        'UPDATE %s v SET user_id = e.pseudonym, '
        '  data = CASE WHEN v.event_type IN (''user_registered'', ''user_email_changed'') '
        '              THEN ''{"email": "erased@erased.invalid"}''::jsonb ELSE ''{}''::jsonb END '
        'FROM erasures e '
        'WHERE e.user_digest IS NOT NULL AND e.tenant = v.tenant '
        '  AND e.user_digest = erasure_digest(v.tenant, v.user_id) AND v.position <= e.forgotten_at',
        p_table);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION scrub_erased_rows(regclass) FROM PUBLIC;
