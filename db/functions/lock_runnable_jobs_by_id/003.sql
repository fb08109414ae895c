-- pgq.lock_runnable_jobs_by_id(p_job_ids, p_now)
-- Internal (claim_jobs, claim_jobs_v2): locks those of p_job_ids that are
-- runnable (status queued or retrying, run_at <= p_now), skipping rows
-- another transaction holds (FOR UPDATE SKIP LOCKED), and returns their ids
-- in claim order (effective priority DESC, run_at, id). Unknown ids, and jobs
-- that are running, finished, cancelled or not yet due, are left out.
-- Left out too: jobs of paused queues, and jobs of queues with a policy
-- (queue_policies: limits, rates, fair share or aging), which are claimed
-- from Postgres only (get_runnable_jobs_v2): the Redis accelerator may still
-- hold their ids, and a claim by id cannot weigh them against the queue's
-- rules. Pauses and policies are read when the call starts. When no queue is
-- paused and none has a policy the statement is the one of revision 001.
-- Raises PQ004 when p_job_ids is NULL.
-- Revision 003 (0012): effective priority order; queues with a policy are left out.
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
    IF NOT EXISTS (SELECT 1 FROM queue_pauses WHERE resumed_at IS NULL)
       AND NOT EXISTS (SELECT 1 FROM queue_policies) THEN
        RETURN ARRAY(
            SELECT id FROM jobs
            WHERE id = ANY (p_job_ids)
              AND status IN ('queued', 'retrying')
              AND run_at <= p_now
            ORDER BY greatest(priority, effective_priority) DESC, run_at, id
            FOR UPDATE SKIP LOCKED);
    END IF;
    RETURN ARRAY(
        SELECT j.id FROM jobs AS j
        WHERE j.id = ANY (p_job_ids)
          AND j.status IN ('queued', 'retrying')
          AND j.run_at <= p_now
          AND NOT EXISTS (SELECT 1 FROM queue_pauses AS p WHERE p.queue = j.queue AND p.resumed_at IS NULL)
          AND NOT EXISTS (SELECT 1 FROM queue_policies AS r WHERE r.queue = j.queue)
        ORDER BY greatest(j.priority, j.effective_priority) DESC, j.run_at, j.id
        FOR UPDATE OF j SKIP LOCKED);
END
$$;
COMMENT ON FUNCTION lock_runnable_jobs_by_id(bigint[], timestamptz) IS
    'Internal (claim_jobs, claim_jobs_v2): lock the named jobs that are runnable, not in a paused queue and not in a queue with a policy (SKIP LOCKED); their ids in claim order.';
