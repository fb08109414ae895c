-- pgq.purge_dead_jobs(p_job_ids, p_older_than, p_now)
-- Transition: dead -> (deleted) (prune), with their dead letters (ON DELETE
-- CASCADE) and executions. p_job_ids NULL purges dead jobs that died more than
-- p_older_than ago (default: all), oldest first; named ids are purged if they
-- are dead and old enough (others are left alone).
-- At most 10,000 jobs per call, so that one call is one short transaction:
-- call it again while it returns 10,000 rows (`pgq dlq purge` and
-- Queue.purge_dead do).
-- Changed from 001: the bound (the signature stays, so grants on it and calls
-- written for 001 keep working); dead jobs are read from jobs_dead_idx, and
-- dead_letter_queue_job_idx serves the cascade (each deleted job used to scan
-- the dead letter queue).
-- Returns the purged ids.
-- Example: SELECT count(*) FROM pgq.purge_dead_jobs(p_older_than => interval '30 days');
CREATE OR REPLACE FUNCTION purge_dead_jobs(
    p_job_ids bigint[] DEFAULT NULL,
    p_older_than interval DEFAULT interval '0',
    p_now timestamptz DEFAULT now()
) RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    -- The bound of one call; pgq/queries.py (PURGE_BATCH) loops on it.
    c_limit constant integer := 10000;
    v_ids bigint[];
BEGIN
    IF p_older_than IS NULL OR p_older_than < interval '0' THEN
        RAISE EXCEPTION 'purge_dead_jobs: p_older_than must not be negative' USING ERRCODE = 'PQ004';
    END IF;
    -- Two statements rather than "p_job_ids IS NULL OR id = ANY (p_job_ids)":
    -- a cached generic plan of that OR can use neither index.
    IF p_job_ids IS NULL THEN
        SELECT coalesce(array_agg(d.id), '{}') INTO v_ids
        FROM (SELECT id FROM jobs
              WHERE status = 'dead' AND finished_at <= p_now - p_older_than
              ORDER BY finished_at
              LIMIT c_limit
              FOR UPDATE) AS d;
    ELSE
        SELECT coalesce(array_agg(d.id), '{}') INTO v_ids
        FROM (SELECT id FROM jobs
              WHERE id = ANY (p_job_ids) AND status = 'dead' AND finished_at <= p_now - p_older_than
              ORDER BY id
              LIMIT c_limit
              FOR UPDATE) AS d;
    END IF;
    DELETE FROM job_executions WHERE job_id = ANY (v_ids);
    RETURN QUERY
    WITH deleted AS (
        DELETE FROM jobs WHERE id = ANY (v_ids) RETURNING id
    )
    SELECT id FROM deleted;
END
$$;

COMMENT ON FUNCTION purge_dead_jobs(bigint[], interval, timestamptz) IS
    'Deletes up to 10,000 dead jobs (all, or the named ids) dead for more than p_older_than, oldest first, with their dead letters and history; returns their ids. Call again while it returns 10,000 rows.';
