-- pgq.prune_workers(p_older_than, p_limit, p_now)
-- Deletes the rows of workers that are gone: stopped (deregistered) or stale
-- (missed their heartbeats; their jobs were rescued) for more than
-- p_older_than, measured from stopped_at (from last_heartbeat if that is
-- unset). A worker row that still owns a running job is kept. At most p_limit
-- rows per call, oldest first. A worker that comes back after its row was
-- deleted gets PQ002 from heartbeat_worker ("not registered"), as a stopped
-- one does, and registers again.
-- The maintenance leader calls it each round with PGQ_WORKER_RETENTION_SECONDS.
-- Returns the number of rows deleted.
-- Example: SELECT pgq.prune_workers(interval '7 days');
CREATE OR REPLACE FUNCTION prune_workers(
    p_older_than interval,
    p_limit integer DEFAULT 1000,
    p_now timestamptz DEFAULT now()
) RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_count integer;
BEGIN
    IF p_older_than IS NULL OR p_older_than < interval '0' OR p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'prune_workers: p_older_than must not be negative and p_limit must be positive'
            USING ERRCODE = 'PQ004';
    END IF;
    -- SKIP LOCKED: a worker row locked right now belongs to a heartbeat or a
    -- registration in progress; it is not gone.
    WITH gone AS (
        SELECT w.id FROM workers AS w
        WHERE w.status IN ('stopped', 'stale')
          AND coalesce(w.stopped_at, w.last_heartbeat) < p_now - p_older_than
          AND NOT EXISTS (SELECT 1 FROM jobs AS j WHERE j.status = 'running' AND j.worker_id = w.id)
        ORDER BY coalesce(w.stopped_at, w.last_heartbeat)
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), deleted AS (
        DELETE FROM workers AS w USING gone AS g WHERE w.id = g.id RETURNING w.id
    )
    SELECT count(*) INTO v_count FROM deleted;
    RETURN v_count;
END
$$;

COMMENT ON FUNCTION prune_workers(interval, integer, timestamptz) IS
    'Deletes up to p_limit rows of workers stopped or stale for more than p_older_than that own no running job; returns how many.';
