-- pgq.lend_priority(p_job_ids)  (internal: enqueue_jobs_v2 calls it)
-- Priority inheritance upwards: each of p_job_ids that is waiting lends its
-- priority to every unfinished ancestor (parents, their parents, ...) whose
-- priority and effective_priority are both lower: their effective_priority is
-- raised to it. A completed ancestor stops the walk (its own ancestors all
-- completed before it ran). Never lowers a value.
-- The rows to raise are locked in id order first, so two enqueues lending to
-- overlapping ancestors cannot deadlock each other.
-- The claim does not read effective_priority yet (a later revision will).
-- Example: SELECT pgq.lend_priority('{42}');
CREATE OR REPLACE FUNCTION lend_priority(p_job_ids bigint[])
RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT
-- The planner's estimates for the recursive CTEs are far too high (millions of
-- rows for thousands), which would pay seconds of JIT compilation for milliseconds of work.
SET jit = off
AS $$
DECLARE
    v_raised integer;
BEGIN
    -- One statement: the rows to raise are locked in id order (the CTE with
    -- ORDER BY ... FOR NO KEY UPDATE), then updated.
    WITH RECURSIVE lend(id, p) AS (
        SELECT d.parent_id, c.priority
        FROM jobs AS c JOIN job_dependencies AS d ON d.child_id = c.id
        WHERE c.id = ANY (p_job_ids) AND c.status = 'waiting'
        UNION
        -- Only a waiting job has unfinished parents: the walk climbs through those.
        SELECT d.parent_id, l.p
        FROM lend AS l
        JOIN jobs AS a ON a.id = l.id AND a.status = 'waiting'
        JOIN job_dependencies AS d ON d.child_id = l.id
    ), best AS (
        SELECT l.id, max(l.p) AS p FROM lend AS l GROUP BY l.id
    ), locked AS (
        SELECT j.id, b.p FROM jobs AS j JOIN best AS b ON b.id = j.id
        WHERE j.status IN ('waiting', 'queued', 'running', 'retrying')
          AND greatest(j.priority, coalesce(j.effective_priority, 0)) < b.p
        ORDER BY j.id
        FOR NO KEY UPDATE OF j
    )
    UPDATE jobs AS j SET effective_priority = l.p
    FROM locked AS l
    WHERE j.id = l.id AND greatest(j.priority, coalesce(j.effective_priority, 0)) < l.p;
    GET DIAGNOSTICS v_raised = ROW_COUNT;
    RETURN v_raised;
END
$$;

COMMENT ON FUNCTION lend_priority(bigint[]) IS
    'Internal (enqueue_jobs_v2): raises the effective_priority of the unfinished ancestors of these waiting jobs to their priority (priority inheritance); returns the rows raised.';
