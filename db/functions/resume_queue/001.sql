-- pgq.resume_queue(p_queue, p_now)
-- Resumes a paused queue: claims that start after the commit take its jobs
-- again. Records when and by whom (session_user, application_name) in the
-- queue's queue_pauses row (kept: resumed_at tells the Redis accelerator's
-- reconciler to offer the queue's jobs again).
-- Idempotent: returns true when it resumed the queue, false when the queue
-- was not paused.
-- Example: SELECT pgq.resume_queue('emails');
CREATE OR REPLACE FUNCTION resume_queue(
    p_queue text,
    p_now timestamptz DEFAULT now()
) RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF p_queue IS NULL OR p_now IS NULL THEN
        RAISE EXCEPTION 'resume_queue: p_queue and p_now must not be NULL'
            USING ERRCODE = 'PQ004';
    END IF;
    UPDATE queue_pauses
    SET resumed_at = p_now,
        resumed_by = session_user,
        resumed_by_application = coalesce(current_setting('application_name', true), '')
    WHERE queue = p_queue AND resumed_at IS NULL;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION resume_queue(text, timestamptz) IS
    'Resume a paused queue: claims that start after the commit take its jobs again. True when it resumed it, false when it was not paused.';
