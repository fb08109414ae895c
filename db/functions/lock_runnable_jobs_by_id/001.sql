-- pgq.lock_runnable_jobs_by_id(p_job_ids, p_now)
-- Internal (claim_jobs, claim_jobs_v2): locks those of p_job_ids that are
-- runnable (status queued or retrying, run_at <= p_now), skipping rows
-- another transaction holds (FOR UPDATE SKIP LOCKED), and returns their ids
-- in claim order (priority DESC, run_at, id). Unknown ids, and jobs that are
-- running, finished, cancelled or not yet due, are left out.
-- Raises PQ004 when p_job_ids is NULL.
CREATE OR REPLACE FUNCTION lock_runnable_jobs_by_id(
    p_job_ids bigint[],
    p_now timestamptz
) RETURNS bigint[]
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF p_job_ids IS NULL THEN
        RAISE EXCEPTION 'claim_jobs: p_job_ids must be an array of job ids'
            USING ERRCODE = 'PQ004';
    END IF;
    RETURN ARRAY(
        SELECT id FROM jobs
        WHERE id = ANY (p_job_ids)
          AND status IN ('queued', 'retrying')
          AND run_at <= p_now
        ORDER BY priority DESC, run_at, id
        FOR UPDATE SKIP LOCKED);
END
$$;
COMMENT ON FUNCTION lock_runnable_jobs_by_id(bigint[], timestamptz) IS
    'Internal (claim_jobs, claim_jobs_v2): lock the named jobs that are runnable (SKIP LOCKED); their ids in claim order.';
