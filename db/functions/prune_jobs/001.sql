-- pgq.prune_jobs(p_older_than, p_limit, p_now)
-- Transition: completed | cancelled -> (deleted) (prune), for jobs finished
-- more than p_older_than ago, at most p_limit per call (short transactions;
-- call again while it returns p_limit). Their executions go with them; dead
-- jobs stay until purged from the dead letter queue (purge_dead_jobs).
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
    v_count integer;
BEGIN
    IF p_older_than IS NULL OR p_older_than < interval '0' OR p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'prune_jobs: p_older_than must not be negative and p_limit must be positive'
            USING ERRCODE = 'PQ004';
    END IF;
    WITH doomed AS (
        SELECT id FROM jobs
        WHERE status IN ('completed', 'cancelled') AND finished_at < p_now - p_older_than
        ORDER BY finished_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), history AS (
        DELETE FROM job_executions AS e USING doomed AS d WHERE e.job_id = d.id
    ), deleted AS (
        DELETE FROM jobs AS j USING doomed AS d WHERE j.id = d.id RETURNING j.id
    )
    SELECT count(*) INTO v_count FROM deleted;
    RETURN v_count;
END
$$;
