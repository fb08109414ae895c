-- pgq.fail_job(p_job_id, p_worker_id, p_attempt, p_error_type, p_error_message,
--              p_traceback, p_retry_delay, p_fatal, p_outcome, p_now)
-- Transition: running -> retrying (with backoff) or running -> dead (DLQ).
-- Fenced: changes the job only if it is still running, owned by p_worker_id
-- and on attempt p_attempt; otherwise returns false and changes nothing.
-- p_retry_delay (seconds) overrides the backoff (a handler's Retry(after=...));
-- p_fatal sends the job to the dead letter queue at once.
-- Example: SELECT pgq.fail_job(42, '<worker uuid>', 1, 'SMTPError', 'timed out');
CREATE OR REPLACE FUNCTION fail_job(
    p_job_id bigint,
    p_worker_id uuid,
    p_attempt integer,
    p_error_type text,
    p_error_message text,
    p_traceback text DEFAULT NULL,
    p_retry_delay double precision DEFAULT NULL,
    p_fatal boolean DEFAULT false,
    p_outcome attempt_outcome DEFAULT 'failed',
    p_now timestamptz DEFAULT now()
) RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF p_outcome NOT IN ('failed', 'timed_out') THEN
        RAISE EXCEPTION 'fail_job: p_outcome must be failed or timed_out (got %)', p_outcome
            USING ERRCODE = 'PQ004';
    END IF;
    -- NOT BETWEEN also rejects NaN (Postgres sorts it above every number) and
    -- infinity, which would fail later as an interval overflow naming nothing.
    IF NOT p_retry_delay BETWEEN 0 AND 31622400 THEN
        RAISE EXCEPTION 'fail_job: p_retry_delay must be from 0 to 31622400 seconds (a year), got %', p_retry_delay
            USING ERRCODE = 'PQ004';
    END IF;
    PERFORM 1 FROM jobs
    WHERE id = p_job_id AND status = 'running' AND worker_id = p_worker_id AND attempts = p_attempt
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM record_failed_attempt(p_job_id, p_outcome, p_error_type, p_error_message, p_traceback,
                                  p_retry_delay, p_fatal, p_now);
    RETURN true;
END
$$;
