-- pgq.cancel_job(p_job_id, p_now)
-- Transition: waiting | queued | retrying | running -> cancelled.
-- A running job is cancelled at once: its worker is told on the channel
-- '<schema>_job_cancelled' (payload: job id) and its late report is rejected
-- by the fence. Returns true when the job was cancelled now, false when it was
-- already cancelled. Raises JobNotFound (PQ001) for an unknown id and
-- InvalidTransition (PQ002) for a completed or dead job.
-- Changed from 001: the execution row records the job's life (revision 0005).
-- Changed from 002: the job's waiting descendants are cancelled with it
-- (cancel_waiting_descendants), the reason in their last_error.
-- Changed from 003: a waiting job's cancellation withdraws the priority it lent
-- to its ancestors (withdraw_priority; cancel_waiting_descendants does the same
-- for the descendants it cancels).
-- Example: SELECT pgq.cancel_job(42);
CREATE OR REPLACE FUNCTION cancel_job(
    p_job_id bigint,
    p_now timestamptz DEFAULT now()
) RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_job jobs;
BEGIN
    SELECT * INTO v_job FROM jobs WHERE id = p_job_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'cancel_job: job % does not exist', p_job_id USING ERRCODE = 'PQ001';
    END IF;
    IF v_job.status = 'cancelled' THEN
        RETURN false;
    END IF;
    IF v_job.status IN ('completed', 'dead') THEN
        RAISE EXCEPTION 'cancel_job: job % is %; only waiting, queued, retrying or running jobs can be cancelled',
            p_job_id, v_job.status USING ERRCODE = 'PQ002';
    END IF;
    IF v_job.status = 'running' THEN
        INSERT INTO job_executions (job_id, life, attempt, worker_id, started_at, finished_at, outcome,
                                    error_type, error_message)
        VALUES (v_job.id, v_job.life, v_job.attempts, v_job.worker_id, v_job.started_at, p_now, 'cancelled',
                'Cancelled', 'cancelled while running');
        PERFORM pg_notify(current_schema() || '_job_cancelled', v_job.id::text);
    END IF;
    UPDATE jobs SET status = 'cancelled', finished_at = p_now, updated_at = p_now
    WHERE id = p_job_id;
    IF v_job.status = 'waiting' THEN
        PERFORM withdraw_priority(ARRAY[p_job_id]);
    END IF;
    IF EXISTS (SELECT 1 FROM job_dependencies AS d WHERE d.parent_id = p_job_id) THEN
        PERFORM cancel_waiting_descendants(p_job_id, p_now);
    END IF;
    RETURN true;
END
$$;

COMMENT ON FUNCTION cancel_job(bigint, timestamptz) IS
    'Cancels a waiting, queued, retrying or running job (a running job''s worker is told) and its waiting descendants; returns false if it was already cancelled.';
