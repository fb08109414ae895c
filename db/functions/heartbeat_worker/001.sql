-- pgq.heartbeat_worker(p_worker_id, p_current_load, p_running_job_ids, p_health_score, p_now)
-- Records a heartbeat. Returns the worker's status before this heartbeat
-- (a 'stale' answer means its jobs were rescued meanwhile; the worker is
-- active again from now on) and, of p_running_job_ids, the jobs this worker no
-- longer owns (cancelled, rescued or timed out): the worker stops them.
-- The other way round, a job this worker owns in the database but did not
-- list, claimed more than 10 seconds ago, is rescued as 'lost' (retried, or
-- dead when out of attempts): its claim committed but the reply never reached
-- the worker (the connection dropped while claiming), so no one would ever run
-- or finish it. The 10 seconds cover a claim that committed after the worker
-- took the list it sends; a worker registers a claimed job within milliseconds.
-- Raises PQ002 when the worker is stopped or unknown.
-- Example: SELECT * FROM pgq.heartbeat_worker('<worker uuid>', 3, '{41,42,43}');
CREATE OR REPLACE FUNCTION heartbeat_worker(
    p_worker_id uuid,
    p_current_load integer DEFAULT 0,
    p_running_job_ids bigint[] DEFAULT '{}',
    p_health_score real DEFAULT NULL,
    p_now timestamptz DEFAULT now()
) RETURNS TABLE (previous_status worker_status_enum, lost_job_ids bigint[])
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_status worker_status_enum;
BEGIN
    SELECT status INTO v_status FROM workers WHERE id = p_worker_id FOR UPDATE;
    IF v_status IS NULL OR v_status = 'stopped' THEN
        RAISE EXCEPTION 'heartbeat_worker: worker % is %', p_worker_id,
            coalesce(v_status::text, 'not registered') USING ERRCODE = 'PQ002';
    END IF;
    UPDATE workers
    SET last_heartbeat = p_now, current_load = greatest(coalesce(p_current_load, 0), 0),
        health_score = coalesce(p_health_score, health_score),
        status = CASE WHEN status = 'stale' THEN 'active' ELSE status END,
        stopped_at = CASE WHEN status = 'stale' THEN NULL ELSE stopped_at END,
        updated_at = p_now
    WHERE id = p_worker_id;
    PERFORM record_failed_attempt(
                j.id, 'lost', 'ClaimLost',
                format('claimed by worker %s at %s, which never received the claim '
                       '(the connection was lost while claiming)', p_worker_id, j.started_at),
                NULL, 0, false, p_now)
    FROM (SELECT o.id, o.started_at FROM jobs AS o
          WHERE o.worker_id = p_worker_id AND o.status = 'running'
            AND o.started_at < p_now - interval '10 seconds'
            AND o.id <> ALL (coalesce(p_running_job_ids, '{}'))
          ORDER BY o.id
          FOR UPDATE SKIP LOCKED) AS j;
    previous_status := v_status;
    lost_job_ids := ARRAY(
        SELECT r FROM unnest(coalesce(p_running_job_ids, '{}')) AS r
        WHERE NOT EXISTS (SELECT 1 FROM jobs AS j
                          WHERE j.id = r AND j.status = 'running' AND j.worker_id = p_worker_id)
        ORDER BY r);
    RETURN NEXT;
END
$$;
