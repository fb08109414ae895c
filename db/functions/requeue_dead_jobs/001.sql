-- pgq.requeue_dead_jobs(p_job_ids, p_queue, p_now)
-- Transition: dead -> queued (requeue), with attempts reset to 0 and the
-- dead_letter_queue row marked requeued_at.
-- p_job_ids NULL requeues every dead job (of p_queue, when given), except one
-- whose unique_key is held by a live job meanwhile (it stays dead). Named ids
-- that are unknown or not dead raise (PQ001 / PQ002), a named job whose
-- unique_key is taken raises unique_violation (DuplicateJob); nothing changes.
-- Returns the requeued ids.
-- Example: SELECT * FROM pgq.requeue_dead_jobs(ARRAY[42, 43]);
--          SELECT count(*) FROM pgq.requeue_dead_jobs(p_queue => 'emails');
CREATE OR REPLACE FUNCTION requeue_dead_jobs(
    p_job_ids bigint[] DEFAULT NULL,
    p_queue text DEFAULT NULL,
    p_now timestamptz DEFAULT now()
) RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_bad bigint;
    v_bad_status job_status;
BEGIN
    IF p_job_ids IS NOT NULL THEN
        SELECT i, j.status INTO v_bad, v_bad_status
        FROM unnest(p_job_ids) AS i LEFT JOIN jobs AS j ON j.id = i
        WHERE j.id IS NULL OR j.status <> 'dead'
        LIMIT 1;
        -- FOUND, not v_bad: a NULL id is unknown too.
        IF FOUND AND v_bad_status IS NULL THEN
            RAISE EXCEPTION 'requeue_dead_jobs: job % does not exist', v_bad USING ERRCODE = 'PQ001';
        ELSIF FOUND THEN
            RAISE EXCEPTION 'requeue_dead_jobs: job % is %, not dead', v_bad, v_bad_status
                USING ERRCODE = 'PQ002';
        END IF;
    END IF;
    RETURN QUERY
    WITH requeued AS (
        UPDATE jobs
        SET status = 'queued', attempts = 0, run_at = p_now, finished_at = NULL,
            updated_at = p_now
        WHERE status = 'dead'
          AND (p_job_ids IS NULL OR id = ANY (p_job_ids))
          AND (p_queue IS NULL OR queue = p_queue)
          -- In bulk, leave dead a job whose unique_key a live job (or a newer
          -- dead job) holds, instead of failing the whole requeue.
          AND (p_job_ids IS NOT NULL OR unique_key IS NULL OR NOT EXISTS (
                SELECT 1 FROM jobs AS other
                WHERE other.unique_key = jobs.unique_key AND other.id <> jobs.id
                  AND (other.status IN ('waiting', 'queued', 'running', 'retrying')
                       OR (other.status = 'dead' AND other.id > jobs.id))))
        RETURNING id, queue
    ), letters AS (
        UPDATE dead_letter_queue AS d SET requeued_at = p_now
        FROM requeued AS r
        WHERE d.job_id = r.id AND d.requeued_at IS NULL
    ), wake AS (
        SELECT notify_queues(array_agg(queue)) FROM requeued
    )
    SELECT r.id FROM requeued AS r, wake;
END
$$;
