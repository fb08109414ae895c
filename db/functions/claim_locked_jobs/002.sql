-- pgq.claim_locked_jobs(p_job_ids, p_worker_id, p_position_base, p_started_through, p_caller, p_now)
-- Internal: the one claiming UPDATE, shared by every claim function.
-- Transition: queued | retrying -> running (claim).
-- p_job_ids are runnable jobs this transaction has locked, in claim order
-- (lock_runnable_jobs decides it: effective priority, or a queue's fair share).
-- Each becomes running for p_worker_id: attempts + 1, started_at = p_now, and
-- claim_position = p_position_base + its place in p_job_ids (1, 2, ...), or
-- NULL when p_position_base is NULL (a claim without positions: its jobs
-- count as started for rescues). Returns them in claim order.
--
-- Then, last, the worker's row, when jobs were claimed: with
-- p_started_through (the worker's watermark, see get_runnable_jobs_v2) an
-- UPDATE raises workers.started_through to it (never lowers it); without one,
-- FOR SHARE. Either way the row stays locked until the claim commits, and its
-- status is checked on the locked version (check_worker_may_claim). mark_stale_workers,
-- drain_worker, heartbeat_worker_v2 and deregister_worker update that row, so
-- they serialise with the claim: a claim that overlaps a stale-marking waits
-- for it and then refuses (rolling back its UPDATE of the jobs), or commits
-- first and its jobs are seen, and rescued, by the sweep. Without the lock a
-- claim could hand jobs to a worker that was declared stale a moment before,
-- after its rescue had run.
-- Lock order: job rows (never waiting: SKIP LOCKED), then the worker row
-- (waiting). The functions that take the worker row first never wait for a
-- job row a claim holds: they lock running jobs (SKIP LOCKED, or jobs that
-- are already running for the worker, which no claim locks), so no cycle.
-- The worker row is taken last so that two claims of one worker (claims in
-- flight) wait for each other only for the other's commit.
-- Revision 002 (0012): returns the jobs in the order of p_job_ids (the claim
-- order lock_runnable_jobs chose), which their claim positions follow.
CREATE OR REPLACE FUNCTION claim_locked_jobs(
    p_job_ids bigint[],
    p_worker_id uuid,
    p_position_base bigint,
    p_started_through bigint,
    p_caller text,
    p_now timestamptz
) RETURNS SETOF jobs
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_status worker_status_enum;
BEGIN
    IF cardinality(p_job_ids) > 0 THEN
        RETURN QUERY
        WITH claimed AS (
            UPDATE jobs AS j
            SET status = 'running', worker_id = p_worker_id, attempts = j.attempts + 1,
                started_at = p_now, updated_at = p_now,
                -- array_position is linear, so this is quadratic in the batch,
                -- but cheaper than a join up to many hundreds of jobs (5 us for
                -- 100), and nothing without positions.
                claim_position = CASE WHEN p_position_base IS NOT NULL
                                      THEN p_position_base + array_position(p_job_ids, j.id) END
            -- = ANY: primary-key lookups, as the claim always did.
            WHERE j.id = ANY (p_job_ids)
            RETURNING j.*
        )
        -- UPDATE ... RETURNING yields rows in join order, not claim order.
        SELECT * FROM claimed ORDER BY array_position(p_job_ids, claimed.id);

        IF p_started_through IS NOT NULL THEN
            UPDATE workers
            SET started_through = greatest(started_through, p_started_through), updated_at = p_now
            WHERE id = p_worker_id
            RETURNING status INTO v_status;
        ELSE
            SELECT status INTO v_status FROM workers WHERE id = p_worker_id FOR SHARE;
        END IF;
        IF v_status IS DISTINCT FROM 'active' THEN
            PERFORM check_worker_may_claim(p_caller, p_worker_id, v_status);
        END IF;
    ELSIF p_started_through IS NOT NULL THEN
        -- Nothing claimed, nothing to protect (the caller checked the status):
        -- only a higher watermark is written, so an idle worker's polls write nothing.
        UPDATE workers SET started_through = p_started_through, updated_at = p_now
        WHERE id = p_worker_id AND started_through < p_started_through;
    END IF;
END
$$;
COMMENT ON FUNCTION claim_locked_jobs(bigint[], uuid, bigint, bigint, text, timestamptz) IS
    'Internal (claim functions): mark locked jobs running for the worker with claim positions, then lock the worker row, store its watermark and check it may claim.';
