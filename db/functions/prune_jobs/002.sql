-- pgq.prune_jobs(p_older_than, p_limit, p_now)
-- Transition: completed | cancelled -> (deleted) (prune), for jobs finished
-- more than p_older_than ago, oldest first, at most p_limit per call: one call
-- is one short transaction. Call it again while it returns p_limit (the
-- maintenance leader loops within a time budget, PGQ_PRUNE_TIME_BUDGET_SECONDS).
-- Their executions go with them (dead letters and dependency edges by ON
-- DELETE CASCADE); dead jobs stay until purged (purge_dead_jobs).
-- Changed from 001: the batch is read from jobs_finished_idx (finished_at of
-- completed and cancelled jobs) instead of sorting every finished job, and the
-- deletes look rows up by id (= ANY), so one call costs its batch, not the
-- table. Rows locked by someone else are skipped (another pruner, a repair).
-- Returns the number of jobs deleted.
-- Example: SELECT pgq.prune_jobs(interval '7 days');
CREATE OR REPLACE FUNCTION prune_jobs(
    p_older_than interval,
    p_limit integer DEFAULT 10000,
    p_now timestamptz DEFAULT now()
) RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_ids bigint[];
BEGIN
    IF p_older_than IS NULL OR p_older_than < interval '0' OR p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'prune_jobs: p_older_than must not be negative and p_limit must be positive'
            USING ERRCODE = 'PQ004';
    END IF;
    -- The predicate is jobs_finished_idx's, and the order its key: an index
    -- range scan that stops after p_limit rows.
    SELECT coalesce(array_agg(d.id), '{}') INTO v_ids
    FROM (SELECT id FROM jobs
          WHERE status IN ('completed', 'cancelled') AND finished_at < p_now - p_older_than
          ORDER BY finished_at
          LIMIT p_limit
          FOR UPDATE SKIP LOCKED) AS d;
    DELETE FROM job_executions WHERE job_id = ANY (v_ids);
    DELETE FROM jobs WHERE id = ANY (v_ids);
    RETURN cardinality(v_ids);
END
$$;

COMMENT ON FUNCTION prune_jobs(interval, integer, timestamptz) IS
    'Deletes up to p_limit completed or cancelled jobs finished more than p_older_than ago (oldest first), with their history; returns how many. Call again while it returns p_limit.';
