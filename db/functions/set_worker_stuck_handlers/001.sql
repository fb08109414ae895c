-- pgq.set_worker_stuck_handlers(p_worker_id, p_stuck_handlers, p_now)
-- Records how many of a worker's sync handlers are stuck: still running past
-- their job's timeout (or after their job was cancelled), in threads the
-- worker no longer counts as capacity. The job of each was already failed
-- (timed_out) or taken away; the worker started a new runner thread in its
-- place, so workers.capacity jobs still run at once. A thread cannot be
-- killed: it ends when its handler returns. Past its limit of stuck handlers
-- a worker drains and exits, so that its supervisor starts a fresh process.
-- Read by worker_status.stuck_handlers and `pgq workers`; a worker sends it
-- with its heartbeat when the number changed. No transition: any status but
-- unknown (PQ002); a negative count is PQ004.
-- Example: SELECT pgq.set_worker_stuck_handlers('<worker uuid>', 2);
CREATE OR REPLACE FUNCTION set_worker_stuck_handlers(
    p_worker_id uuid,
    p_stuck_handlers integer,
    p_now timestamptz DEFAULT now()
) RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF p_stuck_handlers IS NULL OR p_stuck_handlers < 0 THEN
        RAISE EXCEPTION 'set_worker_stuck_handlers: p_stuck_handlers must be a number >= 0 (got %)',
            coalesce(p_stuck_handlers::text, 'NULL') USING ERRCODE = 'PQ004';
    END IF;
    UPDATE workers SET stuck_handlers = p_stuck_handlers, updated_at = p_now WHERE id = p_worker_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'set_worker_stuck_handlers: worker % is not registered', p_worker_id
            USING ERRCODE = 'PQ002';
    END IF;
END
$$;
COMMENT ON FUNCTION set_worker_stuck_handlers(uuid, integer, timestamptz) IS
    'Record how many of a worker''s sync handlers run on past their job''s timeout (their threads replaced); shown by worker_status.stuck_handlers. PQ002: unknown worker; PQ004: negative.';
