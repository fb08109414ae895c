-- pgq.claim_jobs(p_job_ids, p_worker_id, p_now)
-- Transition: queued | retrying -> running (claim), for the jobs named by id.
-- The Redis accelerator's claim (see claim_jobs_v2): claims those of the ids
-- that are queued or retrying and due, skipping rows another transaction
-- holds; the others are missing from the result. The worker must be active:
-- PQ005 when draining, PQ002 when stale, stopped or unknown.
-- claim_jobs_v2 without claim positions (the same internals, called
-- directly): the jobs count as started from the claim on, so a rescue after
-- a crash charges their attempt.
-- Returns the claimed rows in claim order (priority DESC, run_at, id).
-- Example: SELECT id, task FROM pgq.claim_jobs('{41,42}', '<worker uuid>');
CREATE OR REPLACE FUNCTION claim_jobs(
    p_job_ids bigint[],
    p_worker_id uuid,
    p_now timestamptz DEFAULT now()
) RETURNS SETOF jobs
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_status worker_status_enum;
BEGIN
    -- Fail fast, before locking anything; claim_locked_jobs checks again under
    -- the lock. lock_runnable_jobs_by_id refuses NULL ids.
    SELECT status INTO v_status FROM workers WHERE id = p_worker_id;
    IF v_status IS DISTINCT FROM 'active' THEN
        PERFORM check_worker_may_claim('claim_jobs', p_worker_id, v_status);
    END IF;
    RETURN QUERY
    SELECT * FROM claim_locked_jobs(lock_runnable_jobs_by_id(p_job_ids, p_now), p_worker_id,
                                    NULL, NULL, 'claim_jobs', p_now);
END
$$;
COMMENT ON FUNCTION claim_jobs(bigint[], uuid, timestamptz) IS
    'Redis accelerator: claim the named jobs that are still runnable for an active worker; the attempts count from the claim. PQ005: the worker is draining.';
