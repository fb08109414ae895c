-- pgq.deregister_worker(p_worker_id, p_now)
-- Transition (workers): any -> stopped. A job still running on the worker
-- (its handler could not be stopped in the grace period) is failed with
-- outcome 'interrupted' and runs again at once (or is dead when out of
-- attempts), so no job stays running for a worker that exited.
-- Returns the number of jobs it interrupted.
-- Example: SELECT pgq.deregister_worker('<worker uuid>');
CREATE OR REPLACE FUNCTION deregister_worker(
    p_worker_id uuid,
    p_now timestamptz DEFAULT now()
) RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_job_id bigint;
    v_count integer := 0;
BEGIN
    UPDATE workers SET status = 'stopped', stopped_at = p_now, current_load = 0, updated_at = p_now
    WHERE id = p_worker_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'deregister_worker: worker % is not registered', p_worker_id
            USING ERRCODE = 'PQ002';
    END IF;
    FOR v_job_id IN
        SELECT id FROM jobs WHERE status = 'running' AND worker_id = p_worker_id
        ORDER BY id FOR UPDATE
    LOOP
        PERFORM record_failed_attempt(v_job_id, 'interrupted', 'WorkerShutdown',
                                      'worker stopped before the attempt finished',
                                      NULL, 0, false, p_now);
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;
