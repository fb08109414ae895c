-- pgq.heartbeat_worker_v2(p_worker_id, p_current_load, p_running_job_ids, p_started_through, p_health_score, p_now)
-- Records a heartbeat: last_heartbeat, load, health, and the worker's
-- watermark p_started_through (see get_runnable_jobs_v2; raised, never
-- lowered; NULL keeps it).
--
-- p_running_job_ids must list every job the worker holds and has not
-- finished reporting: prefetched, running, and finished but whose outcome is
-- not committed yet. A job it owns in the database but did not list, claimed
-- more than 10 seconds ago, is rescued as 'ClaimLost' (run again, or dead
-- when out of attempts; the attempt is given back when its position is above
-- the watermark, see rescue_job): its claim committed but the reply never
-- reached the worker (the connection dropped while claiming), so no one would
-- ever run or finish it. The 10 seconds cover a claim that committed after
-- the worker took the list it sends. A heartbeat that lists nothing therefore
-- rescues every job the worker has held for more than 10 seconds.
--
-- Returns one row:
--   status           the worker's status after this heartbeat: 'active', or
--                    'draining' (drain_worker asked it to stop claiming: it
--                    finishes or releases what it holds, then deregisters);
--   previous_status  before it: 'stale' means its jobs were rescued meanwhile
--                    (it is active, or draining, again from now on);
--   lost_job_ids     of p_running_job_ids, the jobs it no longer owns
--                    (cancelled, rescued, timed out): it stops them;
--   rescued_job_ids  the jobs this heartbeat rescued as ClaimLost.
-- Raises PQ002 when the worker is stopped or unknown.
-- Example: SELECT * FROM pgq.heartbeat_worker_v2('<worker uuid>', 2, '{41,42}', 40);
CREATE OR REPLACE FUNCTION heartbeat_worker_v2(
    p_worker_id uuid,
    p_current_load integer DEFAULT 0,
    p_running_job_ids bigint[] DEFAULT '{}',
    p_started_through bigint DEFAULT NULL,
    p_health_score real DEFAULT NULL,
    p_now timestamptz DEFAULT now()
) RETURNS TABLE (status worker_status_enum, previous_status worker_status_enum, lost_job_ids bigint[],
                 rescued_job_ids bigint[])
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
#variable_conflict use_column
DECLARE
    v_previous worker_status_enum;
    v_status worker_status_enum;
    v_through bigint;
    v_running constant bigint[] := coalesce(p_running_job_ids, '{}');
    v_rescued bigint[] := '{}';
    v_job record;
BEGIN
    IF p_started_through < 0 THEN
        RAISE EXCEPTION 'heartbeat_worker: p_started_through must not be negative (got %)', p_started_through
            USING ERRCODE = 'PQ004';
    END IF;
    SELECT w.status INTO v_previous FROM workers AS w WHERE w.id = p_worker_id FOR UPDATE;
    IF v_previous IS NULL OR v_previous = 'stopped' THEN
        RAISE EXCEPTION 'heartbeat_worker: worker % is %', p_worker_id,
            coalesce(v_previous::text, 'not registered') USING ERRCODE = 'PQ002';
    END IF;
    UPDATE workers AS w
    SET last_heartbeat = p_now, current_load = greatest(coalesce(p_current_load, 0), 0),
        health_score = coalesce(p_health_score, w.health_score),
        -- Back from stale: active, unless a drain was asked for meanwhile.
        status = CASE WHEN w.status <> 'stale' THEN w.status
                      WHEN w.drain_requested_at IS NULL THEN 'active'
                      ELSE 'draining' END,
        stopped_at = CASE WHEN w.status = 'stale' THEN NULL ELSE w.stopped_at END,
        started_through = greatest(w.started_through, coalesce(p_started_through, 0)),
        updated_at = p_now
    WHERE w.id = p_worker_id
    RETURNING w.status, w.started_through INTO v_status, v_through;

    FOR v_job IN
        SELECT o.id, o.started_at, coalesce(o.claim_position > v_through, false) AS unstarted
        FROM jobs AS o
        WHERE o.worker_id = p_worker_id AND o.status = 'running'
          AND o.started_at < p_now - interval '10 seconds'
          AND o.id <> ALL (v_running)
        ORDER BY o.id
        FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM rescue_job(
            v_job.id, v_job.unstarted, 'lost', 'ClaimLost',
            format('claimed by worker %s at %s, which never received the claim '
                   '(the connection was lost while claiming)', p_worker_id, v_job.started_at),
            0, p_now);
        v_rescued := v_rescued || v_job.id;
    END LOOP;

    status := v_status;
    previous_status := v_previous;
    lost_job_ids := ARRAY(
        SELECT r FROM unnest(v_running) AS r
        WHERE NOT EXISTS (SELECT 1 FROM jobs AS j
                          WHERE j.id = r AND j.status = 'running' AND j.worker_id = p_worker_id)
        ORDER BY r);
    rescued_job_ids := v_rescued;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION heartbeat_worker_v2(uuid, integer, bigint[], bigint, real, timestamptz) IS
    'Record a heartbeat and the started watermark; rescue owned jobs not listed in p_running_job_ids (ClaimLost, claimed > 10 s ago). Returns the status now (active or draining), the status before, the listed jobs no longer owned and the jobs rescued.';
