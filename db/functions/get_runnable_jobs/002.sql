-- pgq.get_runnable_jobs(p_queues, p_worker_id, p_max_jobs, p_now)
-- Transition: queued | retrying -> running (claim).
-- Claims up to p_max_jobs due jobs from p_queues, highest priority first, then
-- oldest run_at, then id, and returns them in that order. Rows locked by
-- another claimer are skipped (FOR UPDATE SKIP LOCKED), so concurrent workers
-- never get the same job; only the rows claimed are locked.
-- The worker must be registered and active (register_worker): a draining
-- worker gets PQ005 and must stop claiming; a stale, stopped or unknown one
-- PQ002.
-- get_runnable_jobs_v2 without claim positions: the jobs count as started
-- from the claim on, so a rescue after a crash charges their attempt. A
-- worker that prefetches jobs calls get_runnable_jobs_v2 instead.
-- It calls the same internals as get_runnable_jobs_v2 rather than that
-- function: one call level less (each costs ~0.1 ms in a 100-job claim).
-- Example: SELECT id, task FROM pgq.get_runnable_jobs('{default}', '<worker uuid>', 10);
CREATE OR REPLACE FUNCTION get_runnable_jobs(
    p_queues text[],
    p_worker_id uuid,
    p_max_jobs integer DEFAULT 1,
    p_now timestamptz DEFAULT now()
) RETURNS SETOF jobs
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_status worker_status_enum;
BEGIN
    SELECT status INTO v_status FROM workers WHERE id = p_worker_id;
    IF v_status IS DISTINCT FROM 'active' THEN
        PERFORM check_worker_may_claim('get_runnable_jobs', p_worker_id, v_status);
    END IF;
    RETURN QUERY
    SELECT * FROM claim_locked_jobs(lock_runnable_jobs(p_queues, p_max_jobs, p_now), p_worker_id,
                                    NULL, NULL, 'get_runnable_jobs', p_now);
END
$$;
COMMENT ON FUNCTION get_runnable_jobs(text[], uuid, integer, timestamptz) IS
    'Claim up to p_max_jobs due jobs of the queues for an active worker (priority, then run_at, then id; SKIP LOCKED); the attempts count from the claim. PQ005: the worker is draining.';
