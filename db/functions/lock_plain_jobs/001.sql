-- pgq.lock_plain_jobs(p_queues, p_max_jobs, p_now)
-- Internal (lock_runnable_jobs, lock_policy_jobs): the claim of queues without
-- claim rules (no limit, no fair share), which is most queues. Locks up to
-- p_max_jobs runnable jobs of p_queues (status queued or retrying, run_at <=
-- p_now) in claim order, skipping rows another transaction holds (FOR UPDATE
-- SKIP LOCKED), and returns their ids in that order. It locks exactly the
-- rows it returns: a row locked here and not claimed would be skipped by
-- every other worker until this transaction ends.
-- Claim order: effective priority DESC, run_at, id, where the effective
-- priority is greatest(priority, effective_priority): a job's own priority,
-- raised by the priority its waiting descendants lend it (lend_priority) and
-- by aging (age_jobs). The claim index (jobs_claim_idx) is on that expression.
-- The caller has left paused queues out and checked its arguments.
-- Revision 001 (0012): lock_runnable_jobs/002's body, ordered by effective priority.
CREATE OR REPLACE FUNCTION lock_plain_jobs(
    p_queues text[],
    p_max_jobs integer,
    p_now timestamptz
) RETURNS bigint[]
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_queues text[] := p_queues;  -- distinct names, none NULL (the caller's)
    v_ids bigint[] := '{}';
    v_candidates tid[];
    v_bound_priority smallint;
    v_bound_run_at timestamptz;
    v_bound_id bigint;
    v_depth bigint := p_max_jobs;
    v_passes integer := 0;
BEGIN
    IF cardinality(v_queues) = 1 THEN
        -- One queue: the claim index yields rows in claim order. LIMIT sits
        -- above the row locking, which takes the rows one at a time, skips
        -- those other claimers hold, and stops at p_max_jobs.
        RETURN ARRAY(
            SELECT id FROM jobs
            WHERE queue = v_queues[1]
              AND status IN ('queued', 'retrying')
              AND run_at <= p_now
            ORDER BY greatest(priority, effective_priority) DESC, run_at, id
            LIMIT p_max_jobs
            FOR UPDATE SKIP LOCKED);
    END IF;

    -- Several queues: claim order runs across them, and a locking scan per
    -- queue would lock p_max_jobs rows in each. So first read, without
    -- locking, the first v_depth runnable rows of each queue from the claim
    -- index (candidates); then lock candidates in claim order, skipping rows
    -- other claimers hold, until p_max_jobs are locked (LIMIT sits above the
    -- row locking: rows past the batch are never locked).
    -- A queue whose v_depth rows were all read may have more, which come
    -- after its last candidate: candidates after the earliest such last one
    -- (v_bound_id) are left for a deeper pass, so that a row of one queue never
    -- jumps ahead of a better, lockable row of another queue that was just
    -- not read yet. Without other claimers one pass locks p_max_jobs (the
    -- queue holding v_bound brings v_depth = p_max_jobs candidates up to it);
    -- when they hold candidates, the next pass reads deeper.
    LOOP
        SELECT coalesce(array_agg(c.ctid), '{}'),
               (array_agg(c.priority ORDER BY c.priority DESC, c.run_at, c.id) FILTER (WHERE c.rn = v_depth))[1],
               (array_agg(c.run_at ORDER BY c.priority DESC, c.run_at, c.id) FILTER (WHERE c.rn = v_depth))[1],
               (array_agg(c.id ORDER BY c.priority DESC, c.run_at, c.id) FILTER (WHERE c.rn = v_depth))[1]
        INTO v_candidates, v_bound_priority, v_bound_run_at, v_bound_id
        FROM unnest(v_queues) AS q(queue)
        CROSS JOIN LATERAL (
            SELECT s.ctid, s.id, s.priority, s.run_at,
                   row_number() OVER (ORDER BY s.priority DESC, s.run_at, s.id) AS rn
            FROM (SELECT ctid, id, greatest(priority, effective_priority) AS priority, run_at FROM jobs
                  WHERE queue = q.queue
                    AND status IN ('queued', 'retrying')
                    AND run_at <= p_now
                  ORDER BY greatest(priority, effective_priority) DESC, run_at, id
                  LIMIT v_depth) AS s
        ) AS c;
        v_passes := v_passes + 1;
        IF v_passes >= 3 THEN
            v_bound_id := NULL;  -- the last pass takes any candidate (see below)
        END IF;

        -- Candidates are found again by their row address (a TID scan: no
        -- second index walk). A row updated meanwhile is followed to its new
        -- version, on which the conditions are tested again (a claim that
        -- committed meanwhile is skipped).
        v_ids := v_ids || ARRAY(
            SELECT j.id FROM jobs AS j
            WHERE j.ctid = ANY (v_candidates)
              AND j.queue = ANY (v_queues)
              AND j.status IN ('queued', 'retrying')
              AND j.run_at <= p_now
              AND j.id <> ALL (v_ids)  -- locked by an earlier pass: ours already
              AND (v_bound_id IS NULL
                   OR (-greatest(j.priority, j.effective_priority), j.run_at, j.id) <= (-v_bound_priority, v_bound_run_at, v_bound_id))
            ORDER BY greatest(j.priority, j.effective_priority) DESC, j.run_at, j.id
            LIMIT p_max_jobs - cardinality(v_ids)
            FOR UPDATE SKIP LOCKED);

        -- Done when the batch is full or every runnable row was a candidate.
        -- Bounded: the third pass takes any candidate (order among the rows
        -- other claimers left may then bend), and a worker that still got
        -- fewer jobs than it asked for claims again soon.
        EXIT WHEN cardinality(v_ids) >= p_max_jobs OR v_bound_id IS NULL;
        v_depth := v_depth * 4;
    END LOOP;

    IF v_passes > 1 THEN
        -- A deeper pass can lock rows that come before earlier ones in claim
        -- order (their holder rolled back meanwhile).
        v_ids := ARRAY(SELECT id FROM jobs WHERE id = ANY (v_ids) ORDER BY greatest(priority, effective_priority) DESC, run_at, id);
    END IF;
    RETURN v_ids;
END
$$;
COMMENT ON FUNCTION lock_plain_jobs(text[], integer, timestamptz) IS
    'Internal (lock_runnable_jobs): lock up to p_max_jobs runnable jobs of queues without claim rules, in claim order (effective priority DESC, run_at, id; SKIP LOCKED), locking nothing it does not return.';
