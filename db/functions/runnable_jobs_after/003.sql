-- pgq.runnable_jobs_after(p_after_run_at, p_after_id, p_until, p_limit)
-- Reads (changes nothing): up to p_limit runnable jobs (queued or retrying)
-- with (run_at, id) > (p_after_run_at, p_after_id) and run_at <= p_until, in
-- (run_at, id) order, as (id, queue, priority, run_at). Pages are chained by
-- passing the last row's run_at and id back in.
-- The Redis accelerator's reconciler reads what became runnable since its
-- last pass with it (p_after_run_at = that pass's mirror_horizon(), p_after_id
-- = 0), and everything runnable for a full rebuild ('-infinity', 0).
-- Cost: one walk of the claim index per queue and priority, each touching only
-- rows inside the window, so a pass costs what changed, not the table size.
-- The queues are found by a loose index scan (one probe per queue).
-- Paused queues (queue_pauses) are left out: the mirror does not offer their
-- jobs; the reconciler offers them again after resume_queue (resumed_at).
-- Queues with a policy (queue_policies: limits, rates, fair share, aging) are
-- left out too: Redis cannot weigh a claim against their rules, so their
-- jobs are claimed from Postgres only.
-- "priority" is the effective priority (greatest(priority,
-- effective_priority)), the claim order's: the mirror's lists follow it.
-- Revision 002 (0010): paused queues are left out.
-- Revision 003 (0012): queues with a policy are left out; effective priority.
-- Example: SELECT * FROM pgq.runnable_jobs_after(now() - interval '1 minute', 0);
CREATE OR REPLACE FUNCTION runnable_jobs_after(
    p_after_run_at timestamptz,
    p_after_id bigint,
    p_until timestamptz DEFAULT now(),
    p_limit integer DEFAULT 10000
) RETURNS TABLE (id bigint, queue text, priority smallint, run_at timestamptz)
LANGUAGE plpgsql
STABLE
SET search_path FROM CURRENT
AS $$
BEGIN
    IF p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'runnable_jobs_after: p_limit must be at least 1 (got %)', p_limit
            USING ERRCODE = 'PQ004';
    END IF;
    IF p_after_run_at IS NULL OR p_after_id IS NULL THEN
        RAISE EXCEPTION 'runnable_jobs_after: p_after_run_at and p_after_id must not be NULL'
            USING ERRCODE = 'PQ004';
    END IF;
    RETURN QUERY
    WITH RECURSIVE queues(name) AS (
        (SELECT j.queue FROM jobs AS j
         WHERE j.status IN ('queued', 'retrying')
         ORDER BY j.queue LIMIT 1)
        UNION ALL
        SELECT (SELECT j.queue FROM jobs AS j
                WHERE j.status IN ('queued', 'retrying') AND j.queue > q.name
                ORDER BY j.queue LIMIT 1)
        FROM queues AS q
        WHERE q.name IS NOT NULL
    )
    SELECT c.id, c.queue, c.priority::smallint, c.run_at
    FROM queues AS q
    CROSS JOIN generate_series(1, 5) AS p(priority)
    CROSS JOIN LATERAL (
        SELECT j.id, j.queue, greatest(j.priority, j.effective_priority) AS priority, j.run_at FROM jobs AS j
        WHERE j.queue = q.name AND greatest(j.priority, j.effective_priority) = p.priority
          AND j.status IN ('queued', 'retrying')
          AND (j.run_at, j.id) > (p_after_run_at, p_after_id)
          AND j.run_at <= p_until
        ORDER BY j.run_at, j.id
        LIMIT p_limit
    ) AS c
    WHERE q.name IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM queue_pauses AS p WHERE p.queue = q.name AND p.resumed_at IS NULL)
      AND NOT EXISTS (SELECT 1 FROM queue_policies AS r WHERE r.queue = q.name)
    ORDER BY c.run_at, c.id
    LIMIT p_limit;
END
$$;
COMMENT ON FUNCTION runnable_jobs_after(timestamptz, bigint, timestamptz, integer) IS
    'Redis accelerator: up to p_limit runnable jobs (with their effective priority) of queues that are neither paused nor under a policy, after (p_after_run_at, p_after_id) and due by p_until, in (run_at, id) order; reads only.';
