-- pgq.rescue_job(p_job_id, p_unstarted, p_outcome, p_error_type, p_error_message, p_retry_delay, p_now)
-- Internal: the one place where a rescue decides whether the attempt counts.
-- The caller (mark_stale_workers, heartbeat_worker_v2, deregister_worker,
-- fail_timed_out_jobs) has locked the job row and checked that it is running;
-- p_unstarted is its finding that the handler never started: the job's
-- claim_position is above its worker's watermark (workers.started_through).
--
-- Unstarted, and free_rescues < max_attempts:
--   running -> queued, runnable at once (like release_jobs): the claim is
--   undone, attempts - 1, free_rescues + 1, no job_executions row (nothing
--   ran). Returns 'queued'.
-- Otherwise: record_failed_attempt (running -> retrying or dead, with an
--   execution row of p_outcome). Returns the new status.
--
-- Why the refunds are bounded. The watermark is a report: "every job up to
-- position P has started", sent with each claim and heartbeat, so it lags. A
-- job started after the worker's last report, whose worker then died, looks
-- unstarted too. A poison job -- one that kills its worker as soon as it
-- starts -- is always such a job: it would be given back free after every
-- crash and never reach the dead letter queue. free_rescues counts the free
-- rescues; once it reaches max_attempts, every later rescue charges the
-- attempt. So a job that kills every worker running it is dead after at
-- most 2 * max_attempts crashes (max_attempts free, max_attempts charged),
-- while a prefetched job whose worker was killed before starting it, which
-- rarely happens to one job twice, pays nothing.
CREATE OR REPLACE FUNCTION rescue_job(
    p_job_id bigint,
    p_unstarted boolean,
    p_outcome attempt_outcome,
    p_error_type text,
    p_error_message text,
    p_retry_delay double precision,
    p_now timestamptz
) RETURNS job_status
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_queue text;
BEGIN
    IF p_unstarted THEN
        UPDATE jobs
        SET status = 'queued', attempts = attempts - 1, free_rescues = free_rescues + 1,
            worker_id = NULL, started_at = NULL, claim_position = NULL, run_at = p_now, updated_at = p_now
        WHERE id = p_job_id AND free_rescues < max_attempts
        RETURNING queue INTO v_queue;
        IF FOUND THEN
            PERFORM notify_queues(ARRAY[v_queue]);
            RETURN 'queued';
        END IF;
    END IF;
    RETURN record_failed_attempt(p_job_id, p_outcome, p_error_type, p_error_message, NULL, p_retry_delay,
                                 false, p_now);
END
$$;
COMMENT ON FUNCTION rescue_job(bigint, boolean, attempt_outcome, text, text, double precision, timestamptz) IS
    'Internal (rescues): give a running job back without charging the attempt when its handler never started (at most max_attempts times per job), else record the failed attempt.';
