-- pgq.evacuate_worker(p_worker_id, p_reason, p_source, p_now)
-- Transition (workers): active -> draining, recorded as an evacuation (issue 11).
-- drain_worker, plus why: the worker stops claiming (its next claim raises
-- PQ005, its heartbeat answers 'draining', a notification on
-- '<schema>_worker_draining' tells it at once), releases its unstarted jobs,
-- lets its running ones finish within PGQ_EVACUATION_GRACE_SECONDS and gives
-- back the rest, deregisters, and exits with code 75 (EX_TEMPFAIL) so that its
-- supervisor starts a fresh process (docs/health.md, "Evacuation").
-- The evacuation is recorded in workers.evacuated_at, evacuation_reason and
-- evacuated_by ('worker': it evacuated itself from its own health score;
-- 'operator': pgq workers evacuate, or this function by hand). A worker that
-- was asked to drain becomes an evacuation (its drain request keeps its time).
-- Returns true when this call evacuated the worker, false when it was already
-- evacuated (idempotent: the first reason is kept).
-- Raises PQ004 for a missing or blank reason (or one over 500 characters), or
-- a source other than 'worker' or 'operator'; PQ002 for a stopped or unknown
-- worker. Nothing changes when it raises.
-- Example: SELECT pgq.evacuate_worker('<worker uuid>', 'disk on host failing');
CREATE OR REPLACE FUNCTION evacuate_worker(
    p_worker_id uuid,
    p_reason text,
    p_source text DEFAULT 'operator',
    p_now timestamptz DEFAULT now()
) RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_worker workers;
BEGIN
    IF p_reason IS NULL OR btrim(p_reason) = '' OR length(p_reason) > 500 THEN
        RAISE EXCEPTION 'evacuate_worker: p_reason must say why, in 1 to 500 characters'
            USING ERRCODE = 'PQ004';
    END IF;
    IF p_source IS NULL OR p_source NOT IN ('worker', 'operator') THEN
        RAISE EXCEPTION 'evacuate_worker: p_source must be ''worker'' or ''operator'', got %', p_source
            USING ERRCODE = 'PQ004';
    END IF;
    IF p_now IS NULL THEN
        RAISE EXCEPTION 'evacuate_worker: p_now must not be NULL' USING ERRCODE = 'PQ004';
    END IF;
    SELECT * INTO v_worker FROM workers WHERE id = p_worker_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'evacuate_worker: worker % is not registered', p_worker_id USING ERRCODE = 'PQ002';
    END IF;
    IF v_worker.status = 'stopped' THEN
        RAISE EXCEPTION 'evacuate_worker: worker % is stopped: it has nothing to evacuate', p_worker_id
            USING ERRCODE = 'PQ002';
    END IF;
    -- An evacuation of this life of the worker is one whose time is not before its
    -- drain request (register_worker clears the request of a stopped worker's new life).
    IF v_worker.evacuated_at IS NOT NULL AND v_worker.drain_requested_at IS NOT NULL
       AND v_worker.evacuated_at >= v_worker.drain_requested_at THEN
        RETURN false;
    END IF;
    UPDATE workers
    SET status = CASE WHEN status = 'active' THEN 'draining'::worker_status_enum ELSE status END,
        drain_requested_at = coalesce(drain_requested_at, p_now),
        evacuated_at = greatest(p_now, drain_requested_at),
        evacuation_reason = p_reason,
        evacuated_by = p_source,
        updated_at = p_now
    WHERE id = p_worker_id;
    PERFORM pg_notify(current_schema() || '_worker_draining', p_worker_id::text);
    RETURN true;
END
$$;
COMMENT ON FUNCTION evacuate_worker(uuid, text, text, timestamptz) IS
    'Evacuate a worker: drain_worker plus the reason (workers.evacuation_reason); it releases unstarted jobs, gives back what still runs after PGQ_EVACUATION_GRACE_SECONDS, deregisters and exits 75. False when already evacuated. PQ004: bad reason or source; PQ002: stopped or unknown.';
