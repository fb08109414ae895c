-- pgq.lock_policy_jobs(p_queue, p_max_jobs, p_now)
-- Internal (lock_runnable_jobs): the claim of one queue with claim rules
-- (queue_policies, set_queue_policy). Locks up to p_max_jobs runnable jobs of
-- p_queue within the queue's rules, in claim order, and returns their ids:
--   max_running         at most this many of the queue's jobs running at once,
--                       counted on the jobs table (status running) under the
--                       rule row's lock: a finished, failed, released or
--                       rescued job frees its slot by leaving 'running'.
--   rate_limit/period   a token bucket (token_refill): each job claimed takes
--                       a token; the bucket's state is on the rule row.
--   group_*, fair_share rules per group (jobs.group_key): lock_group_jobs.
-- The rule row is locked (FOR NO KEY UPDATE) for the rest of the claim's
-- transaction: claims of one ruled queue take turns, so two claims never
-- both see the last free slot or token. Claims of other queues are not
-- affected. Lock order: the rule row, then job rows (SKIP LOCKED), then the
-- worker row (claim_locked_jobs); no function takes them the other way round.
-- A queue whose rules were removed meanwhile is claimed as a plain queue.
-- Revision 001 (0012).
CREATE OR REPLACE FUNCTION lock_policy_jobs(
    p_queue text,
    p_max_jobs integer,
    p_now timestamptz
) RETURNS bigint[]
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_policy queue_policies;
    v_budget integer := p_max_jobs;
    v_tokens double precision;
    v_ids bigint[];
BEGIN
    SELECT * INTO v_policy FROM queue_policies WHERE queue = p_queue FOR NO KEY UPDATE;
    IF NOT FOUND OR NOT v_policy.has_claim_rules THEN
        RETURN lock_plain_jobs(ARRAY[p_queue], p_max_jobs, p_now);
    END IF;
    IF v_policy.max_running IS NOT NULL THEN
        -- The running jobs of every queue are few (the fleet's concurrency):
        -- counted through jobs_running_idx.
        v_budget := least(v_budget, v_policy.max_running
                          - (SELECT count(*) FROM jobs WHERE status = 'running' AND queue = p_queue)::integer);
    END IF;
    IF v_policy.rate_limit IS NOT NULL THEN
        v_tokens := token_refill(v_policy.tokens, v_policy.refilled_at, v_policy.rate_limit,
                                 v_policy.rate_period, p_now);
        v_budget := least(v_budget, floor(v_tokens)::integer);
    END IF;
    IF v_budget < 1 THEN
        RETURN '{}';
    END IF;
    IF v_policy.fair_share OR v_policy.group_max_running IS NOT NULL OR v_policy.group_rate_limit IS NOT NULL THEN
        v_ids := lock_group_jobs(v_policy, v_budget, p_now);
    ELSE
        v_ids := lock_plain_jobs(ARRAY[p_queue], v_budget, p_now);
    END IF;
    IF v_policy.rate_limit IS NOT NULL AND cardinality(v_ids) > 0 THEN
        UPDATE queue_policies SET tokens = v_tokens - cardinality(v_ids), refilled_at = p_now
        WHERE queue = p_queue;
    END IF;
    RETURN v_ids;
END
$$;
COMMENT ON FUNCTION lock_policy_jobs(text, integer, timestamptz) IS
    'Internal (lock_runnable_jobs): lock up to p_max_jobs runnable jobs of a queue with claim rules (max_running, rate limit, per-group rules, fair share), holding its rule row''s lock; their ids in claim order.';
