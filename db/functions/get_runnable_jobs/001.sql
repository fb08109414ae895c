-- pgq.get_runnable_jobs(p_queues, p_worker_id, p_max_jobs, p_now)
-- Transition: queued | retrying -> running (claim).
-- Claims up to p_max_jobs due jobs from p_queues, highest priority first, then
-- oldest run_at, then id, and returns them in that order. Rows locked by
-- another claimer are skipped (FOR UPDATE SKIP LOCKED), so concurrent workers
-- never get the same job.
-- The worker must be registered and active (register_worker): a draining or
-- stale worker claims nothing.
-- Example: SELECT id, task FROM pgq.get_runnable_jobs('{default}', '<worker uuid>', 10);
CREATE OR REPLACE FUNCTION get_runnable_jobs(
    p_queues text[],
    p_worker_id uuid,
    p_max_jobs integer DEFAULT 1,
    p_now timestamptz DEFAULT now()
) RETURNS SETOF jobs
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_worker_status worker_status_enum;
BEGIN
    IF p_max_jobs IS NULL OR p_max_jobs < 1 THEN
        RAISE EXCEPTION 'get_runnable_jobs: p_max_jobs must be at least 1 (got %)', p_max_jobs
            USING ERRCODE = 'PQ004';
    END IF;
    IF coalesce(cardinality(p_queues), 0) = 0 THEN
        RAISE EXCEPTION 'get_runnable_jobs: p_queues must name at least one queue'
            USING ERRCODE = 'PQ004';
    END IF;
    SELECT status INTO v_worker_status FROM workers WHERE id = p_worker_id;
    IF v_worker_status IS DISTINCT FROM 'active' THEN
        RAISE EXCEPTION 'get_runnable_jobs: worker % is %, only an active worker may claim jobs',
            p_worker_id, coalesce(v_worker_status::text, 'not registered')
            USING ERRCODE = 'PQ002';
    END IF;

    IF cardinality(p_queues) = 1 THEN
        -- One queue: the claim index gives rows in claim order directly.
        -- The CTE makes the LIMITed, locked selection run exactly once; without
        -- it the planner may re-evaluate the subquery and lock extra rows.
        RETURN QUERY
        WITH candidates AS MATERIALIZED (
            SELECT id FROM jobs
            WHERE queue = p_queues[1]
              AND status IN ('queued', 'retrying')
              AND run_at <= p_now
            ORDER BY priority DESC, run_at, id
            LIMIT p_max_jobs
            FOR UPDATE SKIP LOCKED
        ), claimed AS (
            UPDATE jobs AS j
            SET status = 'running', worker_id = p_worker_id, attempts = j.attempts + 1,
                started_at = p_now, updated_at = p_now
            -- = ANY(ARRAY(...)): primary-key lookups. A join would let the planner
            -- hash the candidates against a sequential scan of the whole table.
            WHERE j.id = ANY (ARRAY(SELECT c.id FROM candidates AS c))
            RETURNING j.*
        )
        -- UPDATE ... RETURNING yields rows in join order, not claim order.
        SELECT * FROM claimed ORDER BY priority DESC, run_at, id;
    ELSE
        -- Several queues: walk the claim index once per queue (each walk is in
        -- claim order), then merge. Rows locked here but not chosen are released
        -- when the transaction ends.
        RETURN QUERY
        WITH candidates AS MATERIALIZED (
            SELECT c.id FROM (SELECT DISTINCT unnest(p_queues) AS queue) AS q
            CROSS JOIN LATERAL (
                SELECT id, priority, run_at FROM jobs
                WHERE queue = q.queue
                  AND status IN ('queued', 'retrying')
                  AND run_at <= p_now
                ORDER BY priority DESC, run_at, id
                LIMIT p_max_jobs
                FOR UPDATE SKIP LOCKED
            ) AS c
            ORDER BY c.priority DESC, c.run_at, c.id
            LIMIT p_max_jobs
        ), claimed AS (
            UPDATE jobs AS j
            SET status = 'running', worker_id = p_worker_id, attempts = j.attempts + 1,
                started_at = p_now, updated_at = p_now
            -- = ANY(ARRAY(...)): primary-key lookups. A join would let the planner
            -- hash the candidates against a sequential scan of the whole table.
            WHERE j.id = ANY (ARRAY(SELECT c.id FROM candidates AS c))
            RETURNING j.*
        )
        SELECT * FROM claimed ORDER BY priority DESC, run_at, id;
    END IF;
END
$$;
