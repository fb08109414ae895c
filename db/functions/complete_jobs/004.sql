-- pgq.complete_jobs(p_worker_id, p_job_ids, p_attempts, p_results, p_now)
-- Transition: running -> completed, for a batch.
-- Fenced: job i changes only if it is still running, owned by p_worker_id and
-- on attempt p_attempts[i]. A stale report (the job was rescued, cancelled or
-- already completed) changes nothing.
-- Returns the ids that were completed; ids missing from the result were stale.
-- Changed from 001: the execution row records the job's life (revision 0005).
-- Changed from 002: the waiting children of the jobs completed here whose
-- parents have now all completed become queued in this same transaction
-- (release_waiting_children; their queues are notified).
-- Changed from 003: release_waiting_children is called for every batch and
-- finds the children itself, by index. 003 first asked whether any job of the
-- batch had children (EXISTS over job_dependencies), which the planner ran as
-- a sequential scan expected to stop at the first match: a batch without
-- children (every batch of jobs enqueued without parents) read the whole of
-- job_dependencies, edges of finished graphs included.
-- Example: SELECT * FROM pgq.complete_jobs('<worker uuid>', '{41,42}', '{1,1}');
CREATE OR REPLACE FUNCTION complete_jobs(
    p_worker_id uuid,
    p_job_ids bigint[],
    p_attempts integer[],
    p_results jsonb[] DEFAULT NULL,
    p_now timestamptz DEFAULT now()
) RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
-- The jobs found by primary key are joined to the input by hash. The planner
-- underestimates both sides and would pick a nested loop that rescans the
-- input once per job: quadratic in the batch size (25 ms for 300 jobs).
SET enable_nestloop = off
AS $$
DECLARE
    v_done bigint[];
BEGIN
    IF cardinality(p_job_ids) IS DISTINCT FROM cardinality(p_attempts)
       OR (p_results IS NOT NULL AND cardinality(p_results) <> cardinality(p_job_ids)) THEN
        RAISE EXCEPTION 'complete_jobs: p_job_ids, p_attempts and p_results must have the same length'
            USING ERRCODE = 'PQ004';
    END IF;
    WITH input AS (
        SELECT * FROM unnest(p_job_ids, p_attempts, p_results) AS t(job_id, attempt, result)
    ), done AS (
        UPDATE jobs AS j
        SET status = 'completed', result = i.result, finished_at = p_now, updated_at = p_now
        FROM input AS i
        -- The plan must look rows up by primary key (id = ANY): joining on the
        -- unnested input alone can plan a sequential scan of the whole table, and
        -- "status = 'running' AND worker_id = ..." lets the planner walk every
        -- running job through jobs_running_idx, a set that grows with load.
        -- IS NOT DISTINCT FROM means the same here (the values are never NULL)
        -- but matches no index, which leaves the primary key as the only path.
        WHERE j.id = ANY (p_job_ids)
          AND j.id = i.job_id
          AND j.status IS NOT DISTINCT FROM 'running'
          AND j.worker_id IS NOT DISTINCT FROM p_worker_id
          AND j.attempts = i.attempt
        RETURNING j.id, j.life, j.attempts, j.worker_id, j.started_at
    ), history AS (
        INSERT INTO job_executions (job_id, life, attempt, worker_id, started_at, finished_at, outcome)
        SELECT id, life, attempts, worker_id, started_at, p_now, 'completed' FROM done
    )
    SELECT array_agg(d.id) INTO v_done FROM done AS d;
    IF v_done IS NULL THEN
        RETURN;
    END IF;
    PERFORM release_waiting_children(v_done, p_now);
    RETURN QUERY SELECT unnest(v_done);
END
$$;

COMMENT ON FUNCTION complete_jobs(uuid, bigint[], integer[], jsonb[], timestamptz) IS
    'Completes a batch of running jobs of one worker, fenced by (job id, worker, attempt); returns the ids completed (a missing id was a stale report); queues the waiting children whose parents have all completed.';
