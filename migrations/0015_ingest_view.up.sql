-- Everything an ingest batch is decided against, in one round trip. It takes the append
-- lock first (the store's APPEND_LOCK), then reads: each statement of a volatile function
-- sees what committed before it ran, so the reads see every append that held the lock
-- before this one. Returns the stream's checkpoint and leader epoch (NULL before the first
-- batch), which of the batch's (tenant, command id) pairs the ledger holds, which of its
-- tenants exist, and which of its (tenant, user) pairs are registered.
CREATE FUNCTION ingest_view(
    p_stream text, p_lock_timeout text,
    p_tenants text[], p_commands uuid[], p_user_tenants text[], p_users text[],
    OUT checkpoint_seq bigint, OUT checkpoint_epoch bigint,
    OUT applied_tenants text[], OUT applied_commands uuid[],
    OUT known_tenants text[],
    OUT known_user_tenants text[], OUT known_users text[])
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM set_config('lock_timeout', p_lock_timeout, true);
    PERFORM pg_advisory_xact_lock(4702695165344632388);
    SELECT c.last_seq, c.leader_epoch INTO checkpoint_seq, checkpoint_epoch
    FROM public.ingest_checkpoints c WHERE c.stream = p_stream;
    SELECT coalesce(array_agg(l.tenant), '{}'), coalesce(array_agg(l.command_id), '{}')
    INTO applied_tenants, applied_commands
    FROM public.command_ledger l
    JOIN (SELECT DISTINCT * FROM unnest(p_tenants, p_commands)) AS k(tenant, command_id)
      ON l.tenant = k.tenant AND l.command_id = k.command_id;
    SELECT coalesce(array_agg(t.tenant), '{}') INTO known_tenants
    FROM public.tenants t WHERE t.tenant = ANY (p_tenants);
    SELECT coalesce(array_agg(u.tenant), '{}'), coalesce(array_agg(u.user_id), '{}')
    INTO known_user_tenants, known_users
    FROM public.users u
    JOIN (SELECT DISTINCT * FROM unnest(p_user_tenants, p_users)) AS k(tenant, user_id)
      ON u.tenant = k.tenant AND u.user_id = k.user_id;
END
$$;
REVOKE ALL ON FUNCTION ingest_view(text, text, text[], uuid[], text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ingest_view(text, text, text[], uuid[], text[], text[]) TO activity_writer;
