-- pgq.record_failed_attempt(p_job_id, p_outcome, p_error_type, p_error_message,
--                           p_traceback, p_retry_delay, p_fatal, p_now)
-- Internal: the one place where a failed attempt is decided. The caller has
-- locked the job row and checked that it is running (fail_job,
-- mark_stale_workers, fail_timed_out_jobs, deregister_worker).
-- Transition: running -> retrying (attempts left, not fatal), or
--             running -> dead (+ dead_letter_queue row with the error history:
--             every execution of the job in the order they ended, earlier
--             lives of a requeued job included, each entry with its life).
-- Changed from 001: executions and error_history entries carry the job's life
-- (revision 0005), so the attempts of two lives no longer share numbers.
-- Changed from 002: a job that ends dead cancels its waiting descendants
-- (cancel_waiting_descendants; one index probe when it has no children).
-- p_retry_delay (seconds) overrides the job's backoff; NULL computes it from
-- the job's retry_* columns with jitter.
-- Returns the new status.
CREATE OR REPLACE FUNCTION record_failed_attempt(
    p_job_id bigint,
    p_outcome attempt_outcome,
    p_error_type text,
    p_error_message text,
    p_traceback text DEFAULT NULL,
    p_retry_delay double precision DEFAULT NULL,
    p_fatal boolean DEFAULT false,
    p_now timestamptz DEFAULT now()
) RETURNS job_status
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_job jobs;
    v_error text := nullif(concat_ws(': ', p_error_type, p_error_message), '');
    v_delay double precision;
BEGIN
    SELECT * INTO v_job FROM jobs WHERE id = p_job_id;
    INSERT INTO job_executions (job_id, life, attempt, worker_id, started_at, finished_at, outcome,
                                error_type, error_message, traceback)
    VALUES (v_job.id, v_job.life, v_job.attempts, v_job.worker_id, v_job.started_at, p_now, p_outcome,
            p_error_type, p_error_message, p_traceback);

    IF p_fatal OR v_job.attempts >= v_job.max_attempts THEN
        UPDATE jobs SET status = 'dead', finished_at = p_now, last_error = v_error, updated_at = p_now
        WHERE id = p_job_id;
        INSERT INTO dead_letter_queue (job_id, queue, task, reason, last_error, error_history, moved_at)
        SELECT v_job.id, v_job.queue, v_job.task,
               CASE WHEN p_fatal THEN 'fatal' ELSE 'exhausted' END,
               v_error,
               coalesce(jsonb_agg(jsonb_build_object(
                            'life', e.life, 'attempt', e.attempt, 'outcome', e.outcome, 'worker_id', e.worker_id,
                            'started_at', e.started_at, 'finished_at', e.finished_at,
                            'error_type', e.error_type, 'error_message', e.error_message)
                        ORDER BY e.id), '[]'::jsonb),
               p_now
        FROM job_executions AS e
        WHERE e.job_id = p_job_id;
        IF EXISTS (SELECT 1 FROM job_dependencies AS d WHERE d.parent_id = p_job_id) THEN
            PERFORM cancel_waiting_descendants(p_job_id, p_now);
        END IF;
        RETURN 'dead';
    END IF;

    v_delay := greatest(0, coalesce(
        p_retry_delay,
        retry_delay(v_job.attempts, v_job.retry_base_seconds, v_job.retry_factor, v_job.retry_max_seconds)
            * (1 + coalesce(v_job.retry_jitter, 0.1) * (2 * random() - 1))));
    UPDATE jobs
    SET status = 'retrying', run_at = p_now + make_interval(secs => v_delay),
        last_error = v_error, updated_at = p_now
    WHERE id = p_job_id;
    IF v_delay = 0 THEN
        PERFORM notify_queues(ARRAY[v_job.queue]);
    END IF;
    RETURN 'retrying';
END
$$;

COMMENT ON FUNCTION record_failed_attempt(bigint, attempt_outcome, text, text, text, double precision, boolean,
                                         timestamptz) IS
    'Internal (fail_job, the rescues): records a failed attempt of a locked running job, then retries it or moves it to the dead letter queue (cancelling its waiting descendants); returns the new status.';
