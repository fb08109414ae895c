-- pgq.withdraw_priority(p_job_ids)  (internal: cancel_job, cancel_waiting_descendants)
-- The reverse of lend_priority: p_job_ids have just stopped waiting without
-- running (cancelled, in the caller's transaction), so the priority they lent
-- to their unfinished ancestors is withdrawn. Every ancestor they lent to (the
-- walk of lend_priority: parents, and further up through waiting ancestors)
-- that holds an effective_priority gets it recomputed from the lenders that are
-- left (its waiting descendants, reached through waiting jobs): the highest of
-- their priorities if above its own, else NULL. Only ever lowers. An effective
-- priority that aging had raised (age_jobs) is lowered with it, and the next
-- aging round (the maintenance leader's, every round) raises it again from
-- the time the job has waited.
-- The ancestors are locked in id order (as lend_priority locks them) before
-- the lenders are read, in a statement of its own: a lender enqueued
-- concurrently has either committed before that read, or lends after this
-- transaction commits (its lend_priority waits for the lock). Returns the rows lowered.
-- Example: SELECT pgq.withdraw_priority('{42}');
CREATE OR REPLACE FUNCTION withdraw_priority(p_job_ids bigint[])
RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET jit = off
AS $$
DECLARE
    v_ids bigint[];
    v_lowered integer;
BEGIN
    WITH RECURSIVE up(id) AS (
        SELECT d.parent_id FROM job_dependencies AS d WHERE d.child_id = ANY (p_job_ids)
        UNION
        SELECT d.parent_id
        FROM up JOIN jobs AS a ON a.id = up.id AND a.status = 'waiting'
        JOIN job_dependencies AS d ON d.child_id = up.id
    )
    SELECT array_agg(j.id ORDER BY j.id) INTO v_ids FROM jobs AS j JOIN up ON up.id = j.id
    WHERE j.effective_priority IS NOT NULL AND j.status IN ('waiting', 'queued', 'running', 'retrying');
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM 1 FROM jobs AS j WHERE j.id = ANY (v_ids) ORDER BY j.id FOR NO KEY UPDATE;
    WITH RECURSIVE down(root, id) AS (
        SELECT d.parent_id, d.child_id FROM job_dependencies AS d WHERE d.parent_id = ANY (v_ids)
        UNION
        SELECT down.root, d.child_id
        FROM down JOIN jobs AS c ON c.id = down.id AND c.status = 'waiting'
        JOIN job_dependencies AS d ON d.parent_id = down.id
    ), lent AS (
        SELECT a.id, max(c.priority) FILTER (WHERE c.priority > a.priority) AS p
        FROM jobs AS a
        LEFT JOIN down ON down.root = a.id
        LEFT JOIN jobs AS c ON c.id = down.id AND c.status = 'waiting'
        WHERE a.id = ANY (v_ids)
        GROUP BY a.id, a.priority
    )
    UPDATE jobs AS j SET effective_priority = l.p
    FROM lent AS l
    WHERE j.id = l.id AND (l.p IS NULL OR l.p < j.effective_priority);
    GET DIAGNOSTICS v_lowered = ROW_COUNT;
    RETURN v_lowered;
END
$$;

COMMENT ON FUNCTION withdraw_priority(bigint[]) IS
    'Internal (cancel_job, cancel_waiting_descendants): recomputes, only ever lowering, the effective_priority of the unfinished ancestors these jobs lent to, now that they stopped waiting; returns the rows lowered.';
