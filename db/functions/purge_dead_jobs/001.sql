-- pgq.purge_dead_jobs(p_job_ids, p_older_than, p_now)
-- Transition: dead -> (deleted) (prune), with their dead letters and
-- executions. p_job_ids NULL purges every dead job that died more than
-- p_older_than ago (default: all). Returns the purged ids.
-- Example: SELECT count(*) FROM pgq.purge_dead_jobs(p_older_than => interval '30 days');
CREATE OR REPLACE FUNCTION purge_dead_jobs(
    p_job_ids bigint[] DEFAULT NULL,
    p_older_than interval DEFAULT interval '0',
    p_now timestamptz DEFAULT now()
) RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF p_older_than IS NULL OR p_older_than < interval '0' THEN
        RAISE EXCEPTION 'purge_dead_jobs: p_older_than must not be negative' USING ERRCODE = 'PQ004';
    END IF;
    RETURN QUERY
    WITH doomed AS (
        SELECT id FROM jobs
        WHERE status = 'dead'
          AND (p_job_ids IS NULL OR id = ANY (p_job_ids))
          AND finished_at <= p_now - p_older_than
        FOR UPDATE
    ), history AS (
        DELETE FROM job_executions AS e USING doomed AS d WHERE e.job_id = d.id
    ), deleted AS (
        -- dead_letter_queue rows go by ON DELETE CASCADE.
        DELETE FROM jobs AS j USING doomed AS d WHERE j.id = d.id RETURNING j.id
    )
    SELECT id FROM deleted;
END
$$;
