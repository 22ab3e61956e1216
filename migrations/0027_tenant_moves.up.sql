-- Moving a tenant to another shard. Its events take the next positions of the target shard,
-- in their order; nothing else of them changes (ids, times, tenant positions, data), so its
-- views, its cache entries and every position a client holds stay as they are. This is the
-- log's second sanctioned rewrite, beside erasure: the guard lets a row's position change,
-- and nothing else, for the one tenant `move_tenant` is moving, run as the log's owner.
CREATE OR REPLACE FUNCTION events_refuse_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    erasing text := nullif(current_setting('activity.erasure', true), '');
    moving text := nullif(current_setting('activity.move', true), '');
    owner boolean;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        owner := pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = 'events'::regclass), 'USAGE');
        IF erasing IS NOT NULL AND owner
           AND EXISTS (SELECT 1 FROM erasures WHERE pseudonym = erasing AND completed_at IS NULL)
           AND NEW.user_id = erasing
           AND NEW.data IN ('{}'::jsonb, '{"email": "erased@erased.invalid"}'::jsonb)
           AND (NEW.position, NEW.event_id, NEW.command_id, NEW.tenant, NEW.event_type,
                NEW.activity_type, NEW.occurred_at, NEW.received_at, NEW.recorded_at,
                NEW.subject, NEW.stream_seq, NEW.delivery_count, NEW.tx_id)
               IS NOT DISTINCT FROM
               (OLD.position, OLD.event_id, OLD.command_id, OLD.tenant, OLD.event_type,
                OLD.activity_type, OLD.occurred_at, OLD.received_at, OLD.recorded_at,
                OLD.subject, OLD.stream_seq, OLD.delivery_count, OLD.tx_id)
        THEN
            RETURN NEW;
        END IF;
        IF moving IS NOT NULL AND owner AND OLD.tenant = moving
           AND (to_jsonb(NEW) - 'position') = (to_jsonb(OLD) - 'position')
        THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'the event log is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- Moves `p_tenant` to shard `p_to`; returns how many of its events moved. In one
-- transaction, holding both shards' append locks (their appends wait) and every
-- projection's checkpoints (folds wait):
-- - refused (55000) unless every projection has folded the tenant's events on its shard
--   and everything on the target shard, so the views already hold every moved event and
--   the target's checkpoints can step over them; the caller waits and tries again;
-- - refused (55006) while a detached month holds the tenant (its archive would come back
--   on the old shard);
-- - the events take the target's next positions in their order, erasures of the tenant
--   follow their user_forgotten event, the tenant's head records its new shard, and every
--   projection's checkpoint of the target moves past the moved events.
CREATE FUNCTION move_tenant(p_tenant text, p_to integer) RETURNS bigint
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
DECLARE
    h tenant_heads;
    seq regclass;
    n bigint;
    top bigint;
    behind text;
BEGIN
    SELECT * INTO h FROM tenant_heads WHERE tenant = p_tenant;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the log holds no tenant %', p_tenant USING ERRCODE = 'no_data_found';
    END IF;
    SELECT s.seq INTO seq FROM log_shards s WHERE s.shard = p_to;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the log has no shard %', p_to USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF h.shard = p_to THEN
        RAISE EXCEPTION 'tenant % is on shard % already', p_tenant, p_to
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM archived_months m WHERE m.attached_at IS NULL
               AND (m.tenants IS NULL OR p_tenant = ANY (m.tenants))) THEN
        RAISE EXCEPTION 'a detached month holds tenant %: attach it before moving the tenant', p_tenant
            USING ERRCODE = 'object_in_use';
    END IF;
    PERFORM pg_advisory_xact_lock(4702695165344632388 + s)
    FROM (SELECT unnest(ARRAY[least(h.shard, p_to), greatest(h.shard, p_to)]) AS s) k;
    PERFORM 1 FROM projection_checkpoints FOR UPDATE;
    SELECT string_agg(DISTINCT c.projection, ', ') INTO behind
    FROM shard_checkpoints c
    WHERE (c.shard = h.shard AND EXISTS (
              SELECT 1 FROM events e WHERE e.tenant = p_tenant AND e.position > c.position))
       OR (c.shard = p_to AND EXISTS (
              SELECT 1 FROM events e WHERE e.position > c.position
                AND e.position < (p_to::bigint + 1) << 48));
    IF behind IS NOT NULL THEN
        RAISE EXCEPTION '% not folded up to the move yet: try again once folded', behind
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT count(*) INTO n FROM events WHERE tenant = p_tenant;
    IF n = 0 THEN
        UPDATE tenant_heads SET shard = p_to WHERE tenant = p_tenant;
        RETURN 0;
    END IF;
    top := setval(seq, nextval(seq) + n - 1);
    CREATE TEMP TABLE moved ON COMMIT DROP AS
        SELECT position AS old, occurred_at, top - n + row_number() OVER (ORDER BY position) AS new
        FROM events WHERE tenant = p_tenant;
    PERFORM set_config('activity.move', p_tenant, true);
    UPDATE events e SET position = m.new
    FROM moved m WHERE e.position = m.old AND e.occurred_at = m.occurred_at;
    PERFORM set_config('activity.move', '', true);
    UPDATE erasures r SET forgotten_at = m.new
    FROM moved m WHERE r.tenant = p_tenant AND r.forgotten_at = m.old;
    UPDATE tenant_heads SET shard = p_to, at = top WHERE tenant = p_tenant;
    UPDATE shard_checkpoints SET position = top, updated_at = now() WHERE shard = p_to;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION move_tenant(text, integer) FROM PUBLIC;
