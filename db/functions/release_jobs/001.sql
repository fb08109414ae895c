-- pgq.release_jobs(p_worker_id, p_job_ids, p_attempts, p_now)
-- Transition: running -> queued, for jobs claimed by a worker that never
-- started them (shutdown). The claim is undone: attempts go back down by one
-- and the job is runnable again at once. Fenced like complete_jobs.
-- Returns the released ids.
CREATE OR REPLACE FUNCTION release_jobs(
    p_worker_id uuid,
    p_job_ids bigint[],
    p_attempts integer[],
    p_now timestamptz DEFAULT now()
) RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
-- The jobs found by primary key are joined to the input by hash. The planner
-- underestimates both sides and would pick a nested loop that rescans the
-- input once per job: quadratic in the batch size (25 ms for 300 jobs).
SET enable_nestloop = off
AS $$
BEGIN
    IF cardinality(p_job_ids) IS DISTINCT FROM cardinality(p_attempts) THEN
        RAISE EXCEPTION 'release_jobs: p_job_ids and p_attempts must have the same length'
            USING ERRCODE = 'PQ004';
    END IF;
    RETURN QUERY
    WITH released AS (
        UPDATE jobs AS j
        SET status = 'queued', attempts = j.attempts - 1, worker_id = NULL, started_at = NULL,
            run_at = p_now, updated_at = p_now
        FROM unnest(p_job_ids, p_attempts) AS i(job_id, attempt)
        -- Primary-key lookups only (see complete_jobs for why IS NOT DISTINCT FROM).
        WHERE j.id = ANY (p_job_ids) AND j.id = i.job_id AND j.status IS NOT DISTINCT FROM 'running'
          AND j.worker_id IS NOT DISTINCT FROM p_worker_id AND j.attempts = i.attempt
        RETURNING j.id, j.queue
    ), wake AS (
        SELECT notify_queues(array_agg(queue)) FROM released
    )
    SELECT r.id FROM released AS r, wake;
END
$$;
