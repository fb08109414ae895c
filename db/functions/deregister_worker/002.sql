-- pgq.deregister_worker(p_worker_id, p_now)
-- Transition (workers): any -> stopped. A job still running on the worker
-- (its handler could not be stopped in the grace period) is failed with
-- outcome 'interrupted' and runs again at once (or is dead when out of
-- attempts), so no job stays running for a worker that exited. A job whose
-- claim position is above the worker's watermark never started: it goes back
-- to queued with its attempt given back (see rescue_job). A worker shutting
-- down releases its unstarted jobs first (release_jobs) and reports its
-- final watermark (heartbeat_worker_v2); a DBA may call this for a worker
-- that is gone.
-- Returns the number of jobs it took back (interrupted or given back).
-- Example: SELECT pgq.deregister_worker('<worker uuid>');
CREATE OR REPLACE FUNCTION deregister_worker(
    p_worker_id uuid,
    p_now timestamptz DEFAULT now()
) RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_through bigint;
    v_job record;
    v_count integer := 0;
BEGIN
    UPDATE workers SET status = 'stopped', stopped_at = p_now, current_load = 0, updated_at = p_now
    WHERE id = p_worker_id
    RETURNING started_through INTO v_through;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'deregister_worker: worker % is not registered', p_worker_id
            USING ERRCODE = 'PQ002';
    END IF;
    FOR v_job IN
        SELECT id, coalesce(claim_position > v_through, false) AS unstarted
        FROM jobs WHERE status = 'running' AND worker_id = p_worker_id
        ORDER BY id FOR UPDATE
    LOOP
        PERFORM rescue_job(v_job.id, v_job.unstarted, 'interrupted', 'WorkerShutdown',
                           'worker stopped before the attempt finished', 0, p_now);
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION deregister_worker(uuid, timestamptz) IS
    'Mark a worker stopped; its jobs still running run again at once (attempt counted as interrupted, or given back when never started). Returns how many.';
