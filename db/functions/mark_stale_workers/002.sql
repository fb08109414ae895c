-- pgq.mark_stale_workers(p_heartbeat_timeout, p_now)
-- Transition (workers): active | draining -> stale, when the last heartbeat is
-- older than p_heartbeat_timeout.
-- Transition (jobs, rescue): running -> retrying (runnable at once) or dead,
-- for every job running on a stale or stopped worker, or on a worker id with
-- no registry row. The attempt counts (a job that kills its worker every time
-- ends in the dead letter queue) and is recorded with outcome 'lost' --
-- unless the job's claim position is above its worker's watermark: its
-- handler never started (a prefetched job), so it goes back to queued with
-- its attempt given back and no execution recorded, a bounded number of
-- times (see rescue_job).
-- Rows locked by a worker finishing them right now are skipped; the next
-- sweep sees them if they are still running. Marking a worker stale waits for
-- a claim of that worker that is committing, and a claim that comes after
-- sees the stale status and refuses (claim_locked_jobs).
-- Returns one row per rescued job (worker_id, job_id, new status: retrying,
-- dead, or queued when the attempt was given back), plus one row with job_id
-- NULL for each worker marked stale that had no jobs.
-- Example: SELECT * FROM pgq.mark_stale_workers(interval '90 seconds');
CREATE OR REPLACE FUNCTION mark_stale_workers(
    p_heartbeat_timeout interval,
    p_now timestamptz DEFAULT now()
) RETURNS TABLE (worker_id uuid, job_id bigint, job_status job_status)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_stale uuid[];
    v_job record;
BEGIN
    IF p_heartbeat_timeout IS NULL OR p_heartbeat_timeout <= interval '0' THEN
        RAISE EXCEPTION 'mark_stale_workers: p_heartbeat_timeout must be positive (got %)', p_heartbeat_timeout
            USING ERRCODE = 'PQ004';
    END IF;
    WITH marked AS (
        UPDATE workers AS w
        SET status = 'stale', stopped_at = p_now, current_load = 0, updated_at = p_now
        WHERE w.status IN ('active', 'draining')
          AND w.last_heartbeat < p_now - p_heartbeat_timeout
        RETURNING w.id
    )
    SELECT coalesce(array_agg(id), '{}') INTO v_stale FROM marked;

    FOR v_job IN
        SELECT j.id, j.worker_id, w.last_heartbeat,
               coalesce(j.claim_position > w.started_through, false) AS unstarted
        FROM jobs AS j LEFT JOIN workers AS w ON w.id = j.worker_id
        WHERE j.status = 'running'
          AND (w.id IS NULL OR w.status IN ('stale', 'stopped'))
        ORDER BY j.id
        FOR UPDATE OF j SKIP LOCKED
    LOOP
        worker_id := v_job.worker_id;
        job_id := v_job.id;
        job_status := rescue_job(
            v_job.id, v_job.unstarted, 'lost', 'WorkerLost',
            format('worker %s stopped sending heartbeats (last at %s)',
                   v_job.worker_id, coalesce(v_job.last_heartbeat::text, 'never: not registered')),
            0, p_now);
        v_stale := array_remove(v_stale, v_job.worker_id);
        RETURN NEXT;
    END LOOP;

    RETURN QUERY SELECT s, NULL::bigint, NULL::job_status FROM unnest(v_stale) AS s;
END
$$;
COMMENT ON FUNCTION mark_stale_workers(interval, timestamptz) IS
    'Mark workers silent for longer than the timeout stale and rescue the running jobs of stale, stopped or unknown workers (retrying or dead; queued with the attempt given back when the handler never started).';
