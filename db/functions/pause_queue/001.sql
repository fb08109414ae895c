-- pgq.pause_queue(p_queue, p_now)
-- Pauses a queue: from the commit of the calling transaction on, no claim
-- function (get_runnable_jobs(_v2), claim_jobs(_v2)) takes a job of it; its
-- jobs stay queued or retrying, enqueue keeps working, running jobs finish.
-- A claim that started before the commit read the pauses before it and may
-- still take jobs of the queue (see README, "Pause and resume a queue").
-- Records when and by whom (session_user, application_name) in queue_pauses.
-- Idempotent: returns true when it paused the queue, false when it was
-- already paused (the first pause's time and author are kept).
-- The queue needs no job: a queue may be paused before its first enqueue.
-- Raises 23514 (queue_pauses_queue_name) for a name no job could carry.
-- Example: SELECT pgq.pause_queue('emails');
CREATE OR REPLACE FUNCTION pause_queue(
    p_queue text,
    p_now timestamptz DEFAULT now()
) RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_paused boolean;
BEGIN
    IF p_queue IS NULL OR p_now IS NULL THEN
        RAISE EXCEPTION 'pause_queue: p_queue and p_now must not be NULL'
            USING ERRCODE = 'PQ004';
    END IF;
    -- A row stays after a resume (resumed_at set): the reconciler of the Redis
    -- accelerator reads resumed_at. A new pause takes the row over.
    INSERT INTO queue_pauses AS p (queue, paused_at, paused_by, paused_by_application)
    VALUES (p_queue, p_now, session_user, coalesce(current_setting('application_name', true), ''))
    ON CONFLICT (queue) DO UPDATE
        SET paused_at = excluded.paused_at,
            paused_by = excluded.paused_by,
            paused_by_application = excluded.paused_by_application,
            resumed_at = NULL,
            resumed_by = NULL,
            resumed_by_application = NULL
        WHERE p.resumed_at IS NOT NULL
    RETURNING true INTO v_paused;
    RETURN coalesce(v_paused, false);
END
$$;
COMMENT ON FUNCTION pause_queue(text, timestamptz) IS
    'Pause a queue: claims that start after the commit take none of its jobs; enqueue still works. True when it paused it, false when already paused.';
