-- pgq.get_runnable_jobs_v2(p_queues, p_worker_id, p_max_jobs, p_position_base, p_started_through, p_now)
-- Transition: queued | retrying -> running (claim).
-- Claims up to p_max_jobs due jobs from p_queues, highest priority first, then
-- oldest run_at, then id, and returns them in that order. Rows locked by
-- another claimer are skipped (FOR UPDATE SKIP LOCKED), so concurrent workers
-- never get the same job; only the rows claimed are locked.
-- The worker must be registered and active: a draining worker gets PQ005
-- (stop claiming), a stale, stopped or unknown one PQ002. The status is
-- checked again under the worker row's lock, so a claim never hands jobs to a
-- worker that mark_stale_workers or drain_worker changed meanwhile.
--
-- Positions and the watermark (so that a crash does not charge the attempts
-- of prefetched jobs that never started; see rescue_job). Optional, both:
--   p_position_base    the claimed jobs get claim_position p_position_base + 1,
--                      + 2, ... in the order returned. A worker passes the number
--                      of jobs it asked for before this claim (the sum of its
--                      earlier p_max_jobs), so positions never repeat for it;
--   p_started_through  its watermark P: every job it received with a position
--                      <= P has started its handler (or been finished or
--                      released). Stored in workers.started_through (raised,
--                      never lowered). Rescues give back, without charging the
--                      attempt, the jobs above it.
-- NULL base: positions NULL, the jobs count as started (the 3-argument
-- get_runnable_jobs). NULL watermark: the stored one is kept.
-- Example: SELECT id, task, claim_position FROM pgq.get_runnable_jobs_v2('{default}', '<worker uuid>', 10, 0, 0);
CREATE OR REPLACE FUNCTION get_runnable_jobs_v2(
    p_queues text[],
    p_worker_id uuid,
    p_max_jobs integer,
    p_position_base bigint DEFAULT NULL,
    p_started_through bigint DEFAULT NULL,
    p_now timestamptz DEFAULT now()
) RETURNS SETOF jobs
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_status worker_status_enum;
BEGIN
    IF p_position_base < 0 OR p_started_through < 0 THEN
        RAISE EXCEPTION 'get_runnable_jobs: p_position_base and p_started_through must not be negative (got %, %)',
            p_position_base, p_started_through USING ERRCODE = 'PQ004';
    END IF;
    -- Fail fast, before locking anything; claim_locked_jobs checks again under the lock.
    -- lock_runnable_jobs checks p_queues and p_max_jobs.
    SELECT status INTO v_status FROM workers WHERE id = p_worker_id;
    IF v_status IS DISTINCT FROM 'active' THEN
        PERFORM check_worker_may_claim('get_runnable_jobs', p_worker_id, v_status);
    END IF;
    RETURN QUERY
    SELECT * FROM claim_locked_jobs(lock_runnable_jobs(p_queues, p_max_jobs, p_now), p_worker_id,
                                    p_position_base, p_started_through, 'get_runnable_jobs', p_now);
END
$$;
COMMENT ON FUNCTION get_runnable_jobs_v2(text[], uuid, integer, bigint, bigint, timestamptz) IS
    'Claim up to p_max_jobs due jobs of the queues for an active worker (priority, then run_at, then id; SKIP LOCKED), giving them claim positions from p_position_base + 1 and storing the worker''s started watermark. PQ005: the worker is draining.';
