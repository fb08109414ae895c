-- pgq.clear_queue_policy(p_queue)
-- Removes a queue's claim rules, with its groups' weights and states
-- (group_states): its jobs are claimed in plain priority order again (and
-- through Redis again when workers use the accelerator: the reconciler
-- offers them at its next full pass). Jobs aged or raised keep their
-- effective priority. Returns false when the queue had no policy.
-- Example: SELECT pgq.clear_queue_policy('emails');
CREATE OR REPLACE FUNCTION clear_queue_policy(p_queue text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    DELETE FROM queue_policies WHERE queue = p_queue;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION clear_queue_policy(text) IS
    'Remove a queue''s claim rules and its groups'' weights and states; false when it had none.';
