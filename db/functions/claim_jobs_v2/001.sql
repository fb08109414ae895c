-- pgq.claim_jobs_v2(p_job_ids, p_worker_id, p_position_base, p_started_through, p_now)
-- Transition: queued | retrying -> running (claim), for the jobs named by id.
-- The Redis accelerator's claim: a worker pops job ids from Redis and claims
-- them here. Redis only suggests; this function decides, with the same fence
-- and the same row changes as get_runnable_jobs_v2: the job must be queued or
-- retrying and due (run_at <= p_now); a row locked by another transaction is
-- skipped (FOR UPDATE SKIP LOCKED). Ids that are not claimable (cancelled,
-- completed, dead, claimed by someone else, not yet due, unknown, locked) are
-- left alone: they are simply missing from the result.
-- The worker must be active, checked again under its row's lock: PQ005 when
-- it is draining, PQ002 when stale, stopped or unknown (see get_runnable_jobs_v2).
-- Positions and watermark as for get_runnable_jobs_v2: the claimed jobs get
-- p_position_base + 1, + 2, ... in the order returned; a worker advances its
-- base by cardinality(p_job_ids).
-- Returns the claimed rows in claim order (priority DESC, run_at, id).
-- Example: SELECT id, task, claim_position FROM pgq.claim_jobs_v2('{41,42}', '<worker uuid>', 10, 8);
CREATE OR REPLACE FUNCTION claim_jobs_v2(
    p_job_ids bigint[],
    p_worker_id uuid,
    p_position_base bigint DEFAULT NULL,
    p_started_through bigint DEFAULT NULL,
    p_now timestamptz DEFAULT now()
) RETURNS SETOF jobs
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_status worker_status_enum;
BEGIN
    IF p_position_base < 0 OR p_started_through < 0 THEN
        RAISE EXCEPTION 'claim_jobs: p_position_base and p_started_through must not be negative (got %, %)',
            p_position_base, p_started_through USING ERRCODE = 'PQ004';
    END IF;
    -- Fail fast, before locking anything; claim_locked_jobs checks again under
    -- the lock. lock_runnable_jobs_by_id refuses NULL ids.
    SELECT status INTO v_status FROM workers WHERE id = p_worker_id;
    IF v_status IS DISTINCT FROM 'active' THEN
        PERFORM check_worker_may_claim('claim_jobs', p_worker_id, v_status);
    END IF;
    RETURN QUERY
    SELECT * FROM claim_locked_jobs(lock_runnable_jobs_by_id(p_job_ids, p_now), p_worker_id,
                                    p_position_base, p_started_through, 'claim_jobs', p_now);
END
$$;
COMMENT ON FUNCTION claim_jobs_v2(bigint[], uuid, bigint, bigint, timestamptz) IS
    'Redis accelerator: claim the named jobs that are still runnable for an active worker, with claim positions from p_position_base + 1 and its started watermark. PQ005: the worker is draining.';
