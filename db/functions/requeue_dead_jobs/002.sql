-- pgq.requeue_dead_jobs(p_job_ids, p_queue, p_now)
-- Transition: dead -> queued (requeue): the job starts a new life (life + 1)
-- with a full set of attempts (attempts 0), no last_error, owner or start
-- time; the dead_letter_queue row is marked requeued_at. Its history stays in
-- job_executions (each row says which life it belongs to) and in the dead
-- letter's error_history.
-- p_job_ids NULL requeues every dead job (of p_queue, when given), except one
-- whose unique_key is held by a live job meanwhile (it stays dead). Named ids
-- that are unknown or not dead raise (PQ001 / PQ002), a named job whose
-- unique_key is taken raises unique_violation (DuplicateJob); nothing changes.
-- Changed from 001: life + 1 and last_error, worker_id, started_at cleared
-- (the attempts of two lives no longer share numbers, and a requeued job no
-- longer shows the previous life's error); the bulk path reads dead jobs from
-- jobs_dead_idx and checks each unique key with two index probes
-- (jobs_unique_key_idx for live holders, jobs_dead_unique_key_idx for a newer
-- dead job) instead of scanning the table per key.
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
    v_ids bigint[];
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
        v_ids := p_job_ids;
    ELSE
        -- In bulk, leave dead a job whose unique_key a live job (or a newer dead
        -- job) holds, instead of failing the whole requeue. Each NOT EXISTS
        -- repeats the whole predicate of the partial index that answers it
        -- (unique_key IS NOT NULL too: when the planner hashes the subquery,
        -- the key comparison is no filter, and without it the index would not
        -- qualify and the table would be scanned).
        SELECT coalesce(array_agg(d.id), '{}') INTO v_ids
        FROM jobs AS d
        WHERE d.status = 'dead'
          AND (p_queue IS NULL OR d.queue = p_queue)
          AND (d.unique_key IS NULL
               OR (NOT EXISTS (SELECT 1 FROM jobs AS live
                               WHERE live.unique_key = d.unique_key AND live.unique_key IS NOT NULL
                                 AND live.status IN ('waiting', 'queued', 'running', 'retrying'))
                   AND NOT EXISTS (SELECT 1 FROM jobs AS newer
                                   WHERE newer.unique_key = d.unique_key AND newer.unique_key IS NOT NULL
                                     AND newer.status = 'dead' AND newer.id > d.id)));
    END IF;
    RETURN QUERY
    WITH requeued AS (
        UPDATE jobs
        SET status = 'queued', life = life + 1, attempts = 0, run_at = p_now, finished_at = NULL,
            last_error = NULL, worker_id = NULL, started_at = NULL, updated_at = p_now
        WHERE id = ANY (v_ids) AND status = 'dead'
          -- In bulk, again: a producer may have enqueued a job with the key
          -- since the ids were chosen (this statement sees it; one committing
          -- while it runs still makes it fail with unique_violation).
          AND (p_job_ids IS NOT NULL OR unique_key IS NULL
               OR NOT EXISTS (SELECT 1 FROM jobs AS live
                              WHERE live.unique_key = jobs.unique_key AND live.unique_key IS NOT NULL
                                AND live.status IN ('waiting', 'queued', 'running', 'retrying')))
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

COMMENT ON FUNCTION requeue_dead_jobs(bigint[], text, timestamptz) IS
    'Puts dead jobs (the named ids, or every dead job of p_queue or of all queues) back in their queue for a new life with a full set of attempts; returns their ids.';
