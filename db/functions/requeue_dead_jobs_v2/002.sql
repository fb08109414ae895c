-- pgq.requeue_dead_jobs_v2(p_job_ids, p_queue, p_with_dependents, p_now)
-- Transition: dead -> queued (requeue_dead_jobs, whose rules and errors are
-- these), and with p_with_dependents: cancelled -> waiting for the descendants
-- that were cancelled because an ancestor ended dead or cancelled (their
-- last_error starts with 'cancelled: ', set by cancel_waiting_descendants or
-- enqueue_jobs_v2), transitively through such descendants. A restored job with
-- another parent that is still dead or cancelled is cancelled again at once (so
-- are its restored descendants), the reason in last_error. Restored jobs get
-- finished_at and last_error cleared; they run once their parents complete.
-- Returns the ids requeued (the dead jobs only), as requeue_dead_jobs.
-- Changed from 001: the descendants restored to waiting lend their priority
-- again (lend_priority), as at their enqueue.
-- Example: SELECT * FROM pgq.requeue_dead_jobs_v2(ARRAY[42], p_with_dependents => true);
CREATE OR REPLACE FUNCTION requeue_dead_jobs_v2(
    p_job_ids bigint[] DEFAULT NULL,
    p_queue text DEFAULT NULL,
    p_with_dependents boolean DEFAULT false,
    p_now timestamptz DEFAULT now()
) RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET jit = off
AS $$
DECLARE
    v_requeued bigint[];
    v_below bigint[];
    v_again bigint[];
    v_id bigint;
BEGIN
    SELECT coalesce(array_agg(r.id), '{}') INTO v_requeued FROM requeue_dead_jobs(p_job_ids, p_queue, p_now) AS r(id);
    IF p_with_dependents AND cardinality(v_requeued) > 0 THEN
        WITH RECURSIVE below(id) AS (
            SELECT d.child_id FROM job_dependencies AS d
            JOIN jobs AS c ON c.id = d.child_id AND c.status = 'cancelled' AND c.last_error LIKE 'cancelled: %'
            WHERE d.parent_id = ANY (v_requeued)
            UNION
            SELECT d.child_id FROM below AS b
            JOIN job_dependencies AS d ON d.parent_id = b.id
            JOIN jobs AS c ON c.id = d.child_id AND c.status = 'cancelled' AND c.last_error LIKE 'cancelled: %'
        )
        SELECT array_agg(b.id ORDER BY b.id) INTO v_below FROM below AS b;
        IF v_below IS NOT NULL THEN
            PERFORM 1 FROM jobs AS c WHERE c.id = ANY (v_below) ORDER BY c.id FOR NO KEY UPDATE;
            UPDATE jobs SET status = 'waiting', finished_at = NULL, last_error = NULL, updated_at = p_now
            WHERE id = ANY (v_below) AND status = 'cancelled';
            -- Restored jobs that still have a dead or cancelled parent cannot run.
            SELECT array_agg(DISTINCT d.child_id) INTO v_again
            FROM job_dependencies AS d JOIN jobs AS p ON p.id = d.parent_id
            WHERE d.child_id = ANY (v_below) AND p.status IN ('dead', 'cancelled');
            FOREACH v_id IN ARRAY coalesce(v_again, '{}') LOOP
                UPDATE jobs AS c
                SET status = 'cancelled', finished_at = p_now, updated_at = p_now,
                    last_error = (SELECT format('cancelled: job %s, which it depends on, is %s', p.id, p.status)
                                  FROM job_dependencies AS d JOIN jobs AS p ON p.id = d.parent_id
                                  WHERE d.child_id = v_id AND p.status IN ('dead', 'cancelled')
                                  ORDER BY p.id LIMIT 1)
                WHERE c.id = v_id AND c.status = 'waiting';
                PERFORM cancel_waiting_descendants(v_id, p_now);
            END LOOP;
            PERFORM lend_priority(v_below);
        END IF;
    END IF;
    RETURN QUERY SELECT unnest(v_requeued);
END
$$;

COMMENT ON FUNCTION requeue_dead_jobs_v2(bigint[], text, boolean, timestamptz) IS
    'requeue_dead_jobs, and with p_with_dependents the descendants cancelled because of these jobs back to waiting; returns the ids requeued.';
