-- pgq.claim_jobs(p_job_ids, p_worker_id, p_now)
-- Transition: queued | retrying -> running (claim), for the jobs named by id.
-- The Redis accelerator's claim: a worker pops job ids from Redis and claims
-- them here. Redis only suggests; this function decides, with the same fence
-- and the same row changes as get_runnable_jobs: the job must be queued or
-- retrying and due (run_at <= p_now); a row locked by another transaction is
-- skipped (FOR UPDATE SKIP LOCKED); a claimed row gets status running, this
-- worker, attempts + 1 and started_at. Ids that are not claimable (cancelled,
-- completed, dead, claimed by someone else, not yet due, unknown, locked) are
-- left alone: they are simply missing from the result.
-- The worker must be registered and active (register_worker), as for
-- get_runnable_jobs: a draining or stale worker claims nothing.
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
    v_worker_status worker_status_enum;
BEGIN
    IF p_job_ids IS NULL THEN
        RAISE EXCEPTION 'claim_jobs: p_job_ids must be an array of job ids'
            USING ERRCODE = 'PQ004';
    END IF;
    SELECT status INTO v_worker_status FROM workers WHERE id = p_worker_id;
    IF v_worker_status IS DISTINCT FROM 'active' THEN
        RAISE EXCEPTION 'claim_jobs: worker % is %, only an active worker may claim jobs',
            p_worker_id, coalesce(v_worker_status::text, 'not registered')
            USING ERRCODE = 'PQ002';
    END IF;

    RETURN QUERY
    -- The CTE locks exactly the rows it selects, once (see get_runnable_jobs).
    WITH candidates AS MATERIALIZED (
        SELECT id FROM jobs
        WHERE id = ANY (p_job_ids)
          AND status IN ('queued', 'retrying')
          AND run_at <= p_now
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE jobs AS j
        SET status = 'running', worker_id = p_worker_id, attempts = j.attempts + 1,
            started_at = p_now, updated_at = p_now
        -- = ANY(ARRAY(...)): primary-key lookups, as in get_runnable_jobs.
        WHERE j.id = ANY (ARRAY(SELECT c.id FROM candidates AS c))
        RETURNING j.*
    )
    SELECT * FROM claimed ORDER BY priority DESC, run_at, id;
END
$$;
