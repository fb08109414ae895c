-- pgq.queue_policy_usage
-- Each queue with a policy (queue_policies): its rules and how much of them
-- is used now: running jobs against max_running, tokens left in its rate
-- bucket, runnable jobs, and the number of groups with runnable jobs and
-- with a state (fair share, group rate limits).
-- Example: SELECT * FROM pgq.queue_policy_usage;
CREATE OR REPLACE VIEW queue_policy_usage AS
SELECT p.queue,
       p.max_running,
       (SELECT count(*) FROM jobs AS j WHERE j.status = 'running' AND j.queue = p.queue) AS running,
       p.rate_limit,
       p.rate_period,
       CASE WHEN p.rate_limit IS NOT NULL
            THEN token_refill(p.tokens, p.refilled_at, p.rate_limit, p.rate_period, now()) END AS tokens,
       p.group_max_running,
       p.group_rate_limit,
       p.group_rate_period,
       p.fair_share,
       p.aging_step,
       (SELECT count(*) FROM jobs AS j
        WHERE j.queue = p.queue AND j.status IN ('queued', 'retrying') AND j.run_at <= now()) AS runnable,
       (SELECT count(*) FROM group_states AS g WHERE g.queue = p.queue) AS groups_with_state,
       p.updated_at
FROM queue_policies AS p;

COMMENT ON VIEW queue_policy_usage IS
    'Queues with claim rules: the rules, running jobs against max_running, tokens left, runnable jobs, groups with a state.';
