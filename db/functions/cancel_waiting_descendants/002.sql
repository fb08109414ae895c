-- pgq.cancel_waiting_descendants(p_job_id, p_now)  (internal: record_failed_attempt, cancel_job)
-- Transition: waiting -> cancelled, for every waiting descendant (children,
-- their children, ...) of p_job_id, a job that has just ended dead or
-- cancelled in the caller's transaction: they can never run. Each gets
-- finished_at = p_now and last_error 'cancelled: job <p_job_id>, which it
-- depends on, is <status>' (no job_executions row: it never ran). Only waiting
-- jobs are followed (a descendant already cancelled or finished is left as it is).
-- The descendants are locked in id order before they change, as
-- release_waiting_children locks them: a child is either released or
-- cancelled, never both. Returns how many were cancelled.
-- Changed from 001: the priority the cancelled jobs lent to their other
-- unfinished ancestors is withdrawn (withdraw_priority).
-- Example: SELECT pgq.cancel_waiting_descendants(42);
CREATE OR REPLACE FUNCTION cancel_waiting_descendants(
    p_job_id bigint,
    p_now timestamptz DEFAULT now()
) RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET jit = off
AS $$
DECLARE
    v_reason text;
    v_ids bigint[];
    v_count integer;
BEGIN
    SELECT format('cancelled: job %s, which it depends on, is %s', j.id, j.status) INTO v_reason
    FROM jobs AS j WHERE j.id = p_job_id;
    WITH RECURSIVE below(id) AS (
        SELECT d.child_id FROM job_dependencies AS d
        JOIN jobs AS c ON c.id = d.child_id AND c.status = 'waiting'
        WHERE d.parent_id = p_job_id
        UNION
        SELECT d.child_id FROM below AS b
        JOIN job_dependencies AS d ON d.parent_id = b.id
        JOIN jobs AS c ON c.id = d.child_id AND c.status = 'waiting'
    )
    SELECT array_agg(b.id ORDER BY b.id) INTO v_ids FROM below AS b;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM 1 FROM jobs AS c WHERE c.id = ANY (v_ids) AND c.status = 'waiting' ORDER BY c.id FOR NO KEY UPDATE;
    UPDATE jobs AS c
    SET status = 'cancelled', finished_at = p_now, last_error = v_reason, updated_at = p_now
    WHERE c.id = ANY (v_ids) AND c.status = 'waiting';
    GET DIAGNOSTICS v_count = ROW_COUNT;
    PERFORM withdraw_priority(v_ids);
    RETURN v_count;
END
$$;

COMMENT ON FUNCTION cancel_waiting_descendants(bigint, timestamptz) IS
    'Internal (record_failed_attempt, cancel_job): cancels the waiting descendants of a job that ended dead or cancelled, the reason in last_error; returns how many.';
