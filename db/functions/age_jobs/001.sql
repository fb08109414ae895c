-- pgq.age_jobs(p_now)
-- Aging: in each queue with an aging step (queue_policies.aging_step), a
-- runnable job (queued or retrying) that has been due for k steps gets the
-- effective priority least(5, priority + k), if that is higher than what it
-- has: a job waits at most 4 steps (from priority 1) to reach the top band,
-- where it is ordered by run_at among the others, so low priority is never
-- starved. Never lowers an effective priority (lend_priority raises it too).
-- The maintenance leader calls it every round; DBAs may call it any time.
-- Cost: one walk of the claim index per queue and band below 5, over the jobs
-- due for at least one step. Returns the number of jobs raised.
-- Example: SELECT pgq.age_jobs();
CREATE OR REPLACE FUNCTION age_jobs(p_now timestamptz DEFAULT now())
RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_raised integer;
BEGIN
    WITH due AS (
        SELECT j.id,
               least(5, j.priority + floor(extract(epoch FROM p_now - j.run_at)
                                           / extract(epoch FROM p.aging_step)))::smallint AS aged
        FROM queue_policies AS p
        CROSS JOIN generate_series(1, 4) AS b(band)
        CROSS JOIN LATERAL (
            SELECT j.id, j.priority, j.run_at FROM jobs AS j
            WHERE j.queue = p.queue AND j.status IN ('queued', 'retrying')
              AND greatest(j.priority, j.effective_priority) = b.band
              AND j.run_at <= p_now - p.aging_step
        ) AS j
        WHERE p.aging_step IS NOT NULL
    ), locked AS (
        SELECT j.id, d.aged FROM jobs AS j JOIN due AS d ON d.id = j.id
        WHERE d.aged > greatest(j.priority, j.effective_priority)
        ORDER BY j.id
        FOR NO KEY UPDATE OF j SKIP LOCKED
    )
    UPDATE jobs AS j SET effective_priority = l.aged
    FROM locked AS l
    WHERE j.id = l.id AND j.status IN ('queued', 'retrying')
      AND l.aged > greatest(j.priority, j.effective_priority);
    GET DIAGNOSTICS v_raised = ROW_COUNT;
    RETURN v_raised;
END
$$;
COMMENT ON FUNCTION age_jobs(timestamptz) IS
    'Aging: raise the effective priority of runnable jobs in queues with an aging step by one band per step waited past run_at, up to 5; returns the number raised.';
