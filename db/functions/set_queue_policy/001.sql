-- pgq.set_queue_policy(p_queue, p_max_running, p_rate_limit, p_rate_period,
--                      p_group_max_running, p_group_rate_limit, p_group_rate_period,
--                      p_fair_share, p_aging_step)
-- Sets the claim rules of a queue (its row in queue_policies), replacing the
-- ones it had; a rule left NULL (or fair share false) is off. Every claim
-- function obeys them from the next claim on (see lock_policy_jobs):
--   p_max_running        at most this many of the queue's jobs running at once
--   p_rate_limit/period  at most p_rate_limit claims per p_rate_period (token
--                        bucket, a burst of p_rate_limit)
--   p_group_max_running  the same per group (jobs.group_key), each group on its own
--   p_group_rate_limit/period
--   p_fair_share         weighted fair share between groups (weights: set_group_weight)
--   p_aging_step         a job waiting this long past its run_at gains one
--                        priority band, up to 5 (age_jobs, run by the
--                        maintenance leader)
-- A queue with a policy is claimed from Postgres only, also when workers use
-- the Redis accelerator. The state of its buckets and fair share (tokens,
-- group_states) is kept across changes. Returns the row.
-- Raises PQ004 when no rule is given (clear_queue_policy removes a policy);
-- the table's CHECK constraints refuse values out of range (23514).
-- Example: SELECT * FROM pgq.set_queue_policy('emails', p_max_running => 10,
--              p_rate_limit => 100, p_rate_period => interval '1 second');
CREATE OR REPLACE FUNCTION set_queue_policy(
    p_queue text,
    p_max_running integer DEFAULT NULL,
    p_rate_limit integer DEFAULT NULL,
    p_rate_period interval DEFAULT NULL,
    p_group_max_running integer DEFAULT NULL,
    p_group_rate_limit integer DEFAULT NULL,
    p_group_rate_period interval DEFAULT NULL,
    p_fair_share boolean DEFAULT false,
    p_aging_step interval DEFAULT NULL,
    p_now timestamptz DEFAULT now()
) RETURNS queue_policies
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_row queue_policies;
BEGIN
    IF p_max_running IS NULL AND p_rate_limit IS NULL AND p_group_max_running IS NULL
       AND p_group_rate_limit IS NULL AND NOT coalesce(p_fair_share, false) AND p_aging_step IS NULL THEN
        RAISE EXCEPTION 'set_queue_policy: give at least one rule for queue % (clear_queue_policy removes a policy)',
            p_queue USING ERRCODE = 'PQ004';
    END IF;
    INSERT INTO queue_policies AS p (queue, max_running, rate_limit, rate_period, group_max_running,
                                     group_rate_limit, group_rate_period, fair_share, aging_step,
                                     created_at, updated_at)
    VALUES (p_queue, p_max_running, p_rate_limit, p_rate_period, p_group_max_running,
            p_group_rate_limit, p_group_rate_period, coalesce(p_fair_share, false), p_aging_step, p_now, p_now)
    ON CONFLICT (queue) DO UPDATE
    SET max_running = EXCLUDED.max_running, rate_limit = EXCLUDED.rate_limit,
        rate_period = EXCLUDED.rate_period, group_max_running = EXCLUDED.group_max_running,
        group_rate_limit = EXCLUDED.group_rate_limit, group_rate_period = EXCLUDED.group_rate_period,
        fair_share = EXCLUDED.fair_share, aging_step = EXCLUDED.aging_step, updated_at = p_now
    RETURNING * INTO v_row;
    RETURN v_row;
END
$$;
COMMENT ON FUNCTION set_queue_policy(text, integer, integer, interval, integer, integer, interval, boolean, interval, timestamptz) IS
    'Set a queue''s claim rules (max_running, rate limit, per-group limits, fair share, aging), replacing its previous ones; returns its queue_policies row. PQ004 when no rule is given.';
