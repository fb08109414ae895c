-- pgq.set_group_weight(p_queue, p_group_key, p_weight)
-- The weight of a group (jobs.group_key; '' for jobs without a group) in its
-- queue's fair share: while several groups have runnable jobs, each is
-- claimed in proportion to its weight (default 1). The queue must have a
-- policy (set_queue_policy); the weight goes with it (clear_queue_policy).
-- Raises PQ004 when the queue has no policy; the table's CHECK refuses a
-- weight outside (0, 1000000] (23514).
-- Example: SELECT pgq.set_group_weight('reports', 'tenant-a', 3);
CREATE OR REPLACE FUNCTION set_group_weight(p_queue text, p_group_key text, p_weight double precision)
RETURNS group_states
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_row group_states;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM queue_policies WHERE queue = p_queue) THEN
        RAISE EXCEPTION 'set_group_weight: queue % has no policy (set_queue_policy with p_fair_share => true first)',
            p_queue USING ERRCODE = 'PQ004';
    END IF;
    INSERT INTO group_states AS s (queue, group_key, weight)
    VALUES (p_queue, p_group_key, p_weight)
    ON CONFLICT (queue, group_key) DO UPDATE SET weight = EXCLUDED.weight
    RETURNING * INTO v_row;
    RETURN v_row;
END
$$;
COMMENT ON FUNCTION set_group_weight(text, text, double precision) IS
    'Set a group''s weight in its queue''s fair share (default 1); PQ004 when the queue has no policy.';
