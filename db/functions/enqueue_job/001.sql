-- pgq.enqueue_job(p_task, p_payload, p_queue, p_priority, p_delay, p_max_attempts,
--                 p_timeout, p_unique_key, p_run_at, p_now)
-- Transition: (new) -> queued. Enqueues one job and returns its id; with a
-- unique_key held by a live job, returns that job's id instead.
-- A psql-friendly wrapper over enqueue_jobs (one implementation of the rules).
-- Example: SELECT pgq.enqueue_job('send_email', '{"to": "a@b.c"}', p_priority => 5);
CREATE OR REPLACE FUNCTION enqueue_job(
    p_task text,
    p_payload jsonb DEFAULT '{}'::jsonb,
    p_queue text DEFAULT 'default',
    p_priority integer DEFAULT 3,
    p_delay interval DEFAULT interval '0',
    p_max_attempts integer DEFAULT 3,
    p_timeout interval DEFAULT NULL,
    p_unique_key text DEFAULT NULL,
    p_run_at timestamptz DEFAULT NULL,
    p_now timestamptz DEFAULT now()
) RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_id bigint;
BEGIN
    IF p_delay < interval '0' THEN
        RAISE EXCEPTION 'enqueue_job: p_delay must not be negative (got %)', p_delay
            USING ERRCODE = 'PQ004';
    END IF;
    SELECT e.job_id INTO v_id
    FROM enqueue_jobs(
        ARRAY[p_task], ARRAY[p_payload], ARRAY[p_queue], ARRAY[p_priority],
        ARRAY[coalesce(p_run_at, p_now + coalesce(p_delay, interval '0'))],
        ARRAY[p_max_attempts],
        ARRAY[extract(epoch FROM p_timeout)::double precision],
        ARRAY[p_unique_key],
        ARRAY[NULL::double precision], ARRAY[NULL::double precision],
        ARRAY[NULL::double precision], ARRAY[NULL::double precision],
        p_now) AS e;
    RETURN v_id;
END
$$;
