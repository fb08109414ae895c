-- pgq.lock_group_jobs(p_policy, p_max_jobs, p_now)
-- Internal (lock_policy_jobs, which holds the queue's rule row lock): the
-- claim of a queue with per-group rules. Jobs carry a group (jobs.group_key,
-- e.g. a tenant or a customer); jobs without one form the group '' together.
-- Each group with runnable jobs may take at most
--   group_max_running minus its running jobs, and
--   the tokens of its own bucket (group_rate_limit per group_rate_period),
-- and its jobs are taken in claim order within the group. Across groups:
--   fair_share   weighted fair queueing (virtual time): group g's k-th job
--                of this claim gets the tag base_g + k / weight_g, where
--                base_g = greatest(its vtime, the least vtime among groups
--                with runnable jobs), and the claim takes the lowest tags.
--                So while several groups have backlog each gets claims in
--                proportion to its weight (group_states.weight, default 1),
--                and a group that was idle starts level with the others
--                instead of spending credit saved while idle. Its vtime then
--                advances by taken / weight.
--   otherwise    claim order (effective priority DESC, run_at, id).
-- The groups are found with a loose index scan of jobs_group_claim_idx (one
-- probe per group with runnable or delayed jobs), so a claim costs in
-- proportion to the number of groups, not of jobs. Jobs without a group are
-- looked for among the first 1,000 runnable jobs of the queue in claim order
-- (there is no index of them): in a queue with group rules, give every job a group.
-- Group states (vtime, tokens) are written for the groups that took jobs.
-- Revision 001 (0012).
CREATE OR REPLACE FUNCTION lock_group_jobs(
    p_policy queue_policies,
    p_max_jobs integer,
    p_now timestamptz
) RETURNS bigint[]
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_queue constant text := p_policy.queue;
    v_floor double precision;
    v_tids tid[];
    v_ids bigint[];
BEGIN
    WITH RECURSIVE keyed(k) AS (
        (SELECT j.group_key FROM jobs AS j
         WHERE j.queue = v_queue AND j.status IN ('queued', 'retrying') AND j.group_key IS NOT NULL
         ORDER BY j.group_key LIMIT 1)
        UNION ALL
        SELECT (SELECT j.group_key FROM jobs AS j
                WHERE j.queue = v_queue AND j.status IN ('queued', 'retrying') AND j.group_key > g.k
                ORDER BY j.group_key LIMIT 1)
        FROM keyed AS g
        WHERE g.k IS NOT NULL
    ), first_jobs AS (
        -- Where jobs without a group are looked for (see above).
        SELECT j.ctid AS tid, j.id, greatest(j.priority, j.effective_priority) AS eff, j.run_at, j.group_key
        FROM jobs AS j
        WHERE j.queue = v_queue AND j.status IN ('queued', 'retrying') AND j.run_at <= p_now
        ORDER BY greatest(j.priority, j.effective_priority) DESC, j.run_at, j.id
        LIMIT 1000
    ), groups AS (
        SELECT k FROM keyed WHERE k IS NOT NULL
        UNION ALL
        SELECT '' WHERE EXISTS (SELECT 1 FROM first_jobs WHERE group_key IS NULL)
    ), running AS (
        SELECT coalesce(j.group_key, '') AS k, count(*)::integer AS n
        FROM jobs AS j
        WHERE p_policy.group_max_running IS NOT NULL AND j.status = 'running' AND j.queue = v_queue
        GROUP BY 1
    ), state AS (
        SELECT g.k, coalesce(s.weight, 1) AS w, s.vtime, s.tokens, s.refilled_at, coalesce(r.n, 0) AS running
        FROM groups AS g
        LEFT JOIN group_states AS s ON s.queue = v_queue AND s.group_key = g.k
        LEFT JOIN running AS r ON r.k = g.k
    ), budget AS (
        SELECT st.k, st.w,
               greatest(st.vtime, f.v) AS base,
               least(p_max_jobs,
                     coalesce(p_policy.group_max_running - st.running, p_max_jobs),
                     coalesce(floor(token_refill(st.tokens, st.refilled_at, p_policy.group_rate_limit,
                                                 p_policy.group_rate_period, p_now))::integer, p_max_jobs)) AS b
        FROM state AS st
        CROSS JOIN (SELECT coalesce(min(vtime), 0) AS v FROM state) AS f
    ), candidates AS (
        SELECT b.k, b.w, b.base, c.tid, c.id, c.eff, c.run_at,
               row_number() OVER (PARTITION BY b.k ORDER BY c.eff DESC, c.run_at, c.id) AS rn
        FROM budget AS b
        CROSS JOIN LATERAL (
            SELECT j.ctid AS tid, j.id, greatest(j.priority, j.effective_priority) AS eff, j.run_at
            FROM jobs AS j
            WHERE b.k <> '' AND j.queue = v_queue AND j.group_key = b.k
              AND j.status IN ('queued', 'retrying') AND j.run_at <= p_now
            ORDER BY greatest(j.priority, j.effective_priority) DESC, j.run_at, j.id
            LIMIT greatest(b.b, 0)
        ) AS c
        UNION ALL
        SELECT b.k, b.w, b.base, c.tid, c.id, c.eff, c.run_at,
               row_number() OVER (ORDER BY c.eff DESC, c.run_at, c.id) AS rn
        FROM budget AS b
        CROSS JOIN LATERAL (
            SELECT f.tid, f.id, f.eff, f.run_at FROM first_jobs AS f
            WHERE b.k = '' AND f.group_key IS NULL
            ORDER BY f.eff DESC, f.run_at, f.id
            LIMIT greatest(b.b, 0)
        ) AS c
    ), chosen AS (
        -- Twice the batch: room for rows another transaction holds (a cancel, a Redis claim).
        SELECT c.tid, CASE WHEN p_policy.fair_share THEN c.base + c.rn / c.w END AS tag, c.eff, c.run_at, c.id
        FROM candidates AS c
        ORDER BY 2, c.eff DESC, c.run_at, c.id
        LIMIT 2 * p_max_jobs
    )
    SELECT array_agg(c.tid ORDER BY c.tag, c.eff DESC, c.run_at, c.id), (SELECT coalesce(min(vtime), 0) FROM state)
    INTO v_tids, v_floor
    FROM chosen AS c;

    IF coalesce(cardinality(v_tids), 0) = 0 THEN
        RETURN '{}';
    END IF;
    -- Lock in tag order, found again by row address (a row updated meanwhile
    -- is followed to its new version and tested again).
    v_ids := ARRAY(
        SELECT j.id FROM jobs AS j
        WHERE j.ctid = ANY (v_tids)
          AND j.queue = v_queue AND j.status IN ('queued', 'retrying') AND j.run_at <= p_now
        ORDER BY array_position(v_tids, j.ctid)
        LIMIT p_max_jobs
        FOR UPDATE SKIP LOCKED);

    IF (p_policy.fair_share OR p_policy.group_rate_limit IS NOT NULL) AND cardinality(v_ids) > 0 THEN
        WITH taken AS (
            SELECT coalesce(j.group_key, '') AS k, count(*)::double precision AS n
            FROM jobs AS j WHERE j.id = ANY (v_ids) GROUP BY 1
        ), updated AS (
            UPDATE group_states AS s
            SET vtime = greatest(s.vtime, v_floor) + t.n / s.weight,
                tokens = CASE WHEN p_policy.group_rate_limit IS NOT NULL
                              THEN token_refill(s.tokens, s.refilled_at, p_policy.group_rate_limit,
                                                p_policy.group_rate_period, p_now) - t.n END,
                refilled_at = p_now
            FROM taken AS t
            WHERE s.queue = v_queue AND s.group_key = t.k
            RETURNING s.group_key
        )
        INSERT INTO group_states (queue, group_key, vtime, tokens, refilled_at)
        SELECT v_queue, t.k, v_floor + t.n,
               CASE WHEN p_policy.group_rate_limit IS NOT NULL THEN p_policy.group_rate_limit - t.n END, p_now
        FROM taken AS t
        WHERE t.k NOT IN (SELECT group_key FROM updated)
        ON CONFLICT (queue, group_key) DO NOTHING;
    END IF;
    RETURN v_ids;
END
$$;
COMMENT ON FUNCTION lock_group_jobs(queue_policies, integer, timestamptz) IS
    'Internal (lock_policy_jobs): lock up to p_max_jobs runnable jobs of a queue with per-group rules (group_max_running, group rate limit) and weighted fair share between groups (virtual time); updates the groups'' states; their ids in claim order.';
