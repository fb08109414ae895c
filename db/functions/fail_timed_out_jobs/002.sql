-- pgq.fail_timed_out_jobs(p_grace, p_now)
-- Transition: running -> retrying or dead, for jobs whose attempt has run
-- longer than their timeout plus p_grace (outcome 'timed_out'). The worker
-- enforces timeouts itself; this is the safety net for a worker that is alive
-- but stuck. Its late report is rejected by the fence.
-- A job whose claim position is above its worker's watermark never started
-- (it waited in a stuck worker's buffer): it goes back to queued with its
-- attempt given back (see rescue_job), and another worker takes it.
-- Returns (job_id, worker_id, new status) per job.
-- Example: SELECT * FROM pgq.fail_timed_out_jobs(interval '5 seconds');
CREATE OR REPLACE FUNCTION fail_timed_out_jobs(
    p_grace interval DEFAULT interval '0',
    p_now timestamptz DEFAULT now()
) RETURNS TABLE (job_id bigint, worker_id uuid, job_status job_status)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_job record;
BEGIN
    IF p_grace IS NULL OR p_grace < interval '0' THEN
        RAISE EXCEPTION 'fail_timed_out_jobs: p_grace must not be negative (got %)', p_grace
            USING ERRCODE = 'PQ004';
    END IF;
    FOR v_job IN
        SELECT j.id, j.worker_id, j.timeout,
               coalesce(j.claim_position > w.started_through, false) AS unstarted
        FROM jobs AS j LEFT JOIN workers AS w ON w.id = j.worker_id
        WHERE j.status = 'running'
          AND j.timeout IS NOT NULL
          AND j.started_at + j.timeout + p_grace < p_now
        ORDER BY j.id
        FOR UPDATE OF j SKIP LOCKED
    LOOP
        job_id := v_job.id;
        worker_id := v_job.worker_id;
        job_status := rescue_job(
            v_job.id, v_job.unstarted, 'timed_out', 'JobTimeout',
            format('attempt ran longer than its timeout of %s', v_job.timeout),
            NULL, p_now);
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION fail_timed_out_jobs(interval, timestamptz) IS
    'Fail running jobs past their timeout plus p_grace (retrying or dead; queued with the attempt given back when the handler never started).';
