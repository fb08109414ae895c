-- pgq.lock_runnable_jobs(p_queues, p_max_jobs, p_now)
-- Internal (get_runnable_jobs, get_runnable_jobs_v2): the one definition of
-- "runnable" and of claim order. Locks up to p_max_jobs runnable jobs of
-- p_queues (status queued or retrying, run_at <= p_now), skipping rows another
-- transaction holds (FOR UPDATE SKIP LOCKED), and returns their ids in claim
-- order. It locks exactly the rows it returns.
-- Paused queues (queue_pauses, pause_queue) are left out: their jobs are not
-- runnable. Pauses are read once, when the call starts.
-- Queues without claim rules (most; no row in queue_policies, or a row with
-- only aging) are claimed by lock_plain_jobs in effective priority order.
-- Queues with claim rules (limits, rates, fair share: set_queue_policy) are
-- claimed by lock_policy_jobs, one queue at a time in name order (each takes
-- its queue's rule row, so two claims never wait for each other in a cycle),
-- each offered an equal share of what is left of p_max_jobs (the queues
-- without rules count as one more share); the batch is then put in claim
-- order (effective priority DESC, run_at, id) unless a queue's fair share
-- chose it (its order is kept).
-- When no queue is paused and none has rules this costs two probes of tiny tables.
-- Raises PQ004 when p_max_jobs < 1 or p_queues names no queue.
-- Revision 003 (0012): effective priority order; queues with claim rules.
CREATE OR REPLACE FUNCTION lock_runnable_jobs(
    p_queues text[],
    p_max_jobs integer,
    p_now timestamptz
) RETURNS bigint[]
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_queues text[] := ARRAY(SELECT DISTINCT q FROM unnest(p_queues) AS q WHERE q IS NOT NULL);
    v_ruled text[];
    v_queue text;
    v_ids bigint[] := '{}';
    v_shares integer;
BEGIN
    IF p_max_jobs IS NULL OR p_max_jobs < 1 THEN
        RAISE EXCEPTION 'get_runnable_jobs: p_max_jobs must be at least 1 (got %)', p_max_jobs
            USING ERRCODE = 'PQ004';
    END IF;
    IF coalesce(cardinality(p_queues), 0) = 0 THEN
        RAISE EXCEPTION 'get_runnable_jobs: p_queues must name at least one queue'
            USING ERRCODE = 'PQ004';
    END IF;
    IF EXISTS (SELECT 1 FROM queue_pauses WHERE resumed_at IS NULL) THEN
        v_queues := ARRAY(
            SELECT q FROM unnest(v_queues) AS q
            WHERE NOT EXISTS (SELECT 1 FROM queue_pauses AS p WHERE p.queue = q AND p.resumed_at IS NULL));
        IF cardinality(v_queues) = 0 THEN
            RETURN '{}';
        END IF;
    END IF;
    v_ruled := ARRAY(SELECT p.queue FROM queue_policies AS p
                     WHERE p.queue = ANY (v_queues) AND p.has_claim_rules ORDER BY p.queue);
    IF cardinality(v_ruled) = 0 THEN
        RETURN lock_plain_jobs(v_queues, p_max_jobs, p_now);
    END IF;

    v_queues := ARRAY(SELECT q FROM unnest(v_queues) AS q WHERE q <> ALL (v_ruled));
    v_shares := cardinality(v_ruled) + CASE WHEN cardinality(v_queues) > 0 THEN 1 ELSE 0 END;
    FOREACH v_queue IN ARRAY v_ruled LOOP
        v_ids := v_ids || lock_policy_jobs(
            v_queue, ceil((p_max_jobs - cardinality(v_ids))::numeric / v_shares)::integer, p_now);
        v_shares := v_shares - 1;
        EXIT WHEN cardinality(v_ids) >= p_max_jobs;
    END LOOP;
    IF cardinality(v_queues) > 0 AND cardinality(v_ids) < p_max_jobs THEN
        v_ids := v_ids || lock_plain_jobs(v_queues, p_max_jobs - cardinality(v_ids), p_now);
    END IF;
    IF cardinality(v_ruled) > 1 OR cardinality(v_queues) > 0 THEN
        -- Jobs of several queues: one claim order across them.
        v_ids := ARRAY(SELECT id FROM jobs WHERE id = ANY (v_ids)
                       ORDER BY greatest(priority, effective_priority) DESC, run_at, id);
    END IF;
    RETURN v_ids;
END
$$;
COMMENT ON FUNCTION lock_runnable_jobs(text[], integer, timestamptz) IS
    'Internal (get_runnable_jobs, get_runnable_jobs_v2): lock up to p_max_jobs runnable jobs of the queues that are not paused, obeying each queue''s claim rules (queue_policies), SKIP LOCKED, locking nothing it does not return; their ids in claim order.';
