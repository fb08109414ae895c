-- pgq.drain_worker(p_worker_id, p_now)
-- Transition (workers): active -> draining. Asks a worker to stop claiming:
-- its next claim raises PQ005 (pgq.WorkerDraining) and its heartbeat answers
-- status 'draining'; it finishes (or releases) the jobs it holds and
-- deregisters. A notification on '<schema>_worker_draining' (payload: the
-- worker id) tells a listening worker at once. The request is recorded in
-- workers.drain_requested_at and outlives the status: register_worker keeps a
-- draining worker draining, and a stale worker asked to drain comes back
-- draining (its heartbeat or registration), not active.
-- Returns true when this call asked for the drain, false when the worker was
-- already draining (idempotent) or stale with a drain already asked.
-- A stale worker (silent, its jobs rescued) may be asked too: it stays stale,
-- and comes back draining. Raises PQ002 for a stopped or unknown worker.
-- Example: SELECT pgq.drain_worker('<worker uuid>');
CREATE OR REPLACE FUNCTION drain_worker(
    p_worker_id uuid,
    p_now timestamptz DEFAULT now()
) RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_worker workers;
BEGIN
    SELECT * INTO v_worker FROM workers WHERE id = p_worker_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'drain_worker: worker % is not registered', p_worker_id USING ERRCODE = 'PQ002';
    END IF;
    IF v_worker.status = 'stopped' THEN
        RAISE EXCEPTION 'drain_worker: worker % is stopped: it has nothing to drain', p_worker_id
            USING ERRCODE = 'PQ002';
    END IF;
    IF v_worker.status IN ('draining', 'stale') AND v_worker.drain_requested_at IS NOT NULL THEN
        RETURN false;
    END IF;
    UPDATE workers
    SET status = CASE WHEN status = 'active' THEN 'draining'::worker_status_enum ELSE status END,
        drain_requested_at = p_now, updated_at = p_now
    WHERE id = p_worker_id;
    PERFORM pg_notify(current_schema() || '_worker_draining', p_worker_id::text);
    RETURN v_worker.status <> 'draining';
END
$$;
COMMENT ON FUNCTION drain_worker(uuid, timestamptz) IS
    'Ask a worker to drain: it claims nothing more (PQ005), finishes or releases its jobs and deregisters. Returns false when it was already draining. PQ002: stopped or unknown.';
