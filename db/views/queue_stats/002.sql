-- pgq.queue_stats
-- Depth per queue x status x priority of the jobs that are still to run or to
-- decide on (waiting, queued, running, retrying, dead), with the oldest job's
-- age. For queued/retrying rows, oldest_due_age is how long the oldest due
-- job has been waiting to be claimed (the number to alert on).
-- Changed from 001: completed and cancelled jobs are no longer counted here.
-- Counting them read the whole table (every finished job kept for the
-- retention period) on every `pgq status`; each branch below now reads one
-- partial index (jobs_waiting_idx, jobs_claim_idx, jobs_running_idx,
-- jobs_dead_idx), so the view costs what is live, not what was kept. For the
-- finished jobs, read the estimates in pgq.job_status_estimates (free), or
-- count them yourself (a scan: SELECT count(*) FROM pgq.jobs WHERE status =
-- 'completed').
-- Example: SELECT * FROM pgq.queue_stats WHERE status IN ('queued', 'retrying');
CREATE OR REPLACE VIEW queue_stats AS
SELECT queue,
       status,
       priority,
       count(*)                                  AS jobs,
       count(*) FILTER (WHERE run_at <= now())   AS due,
       min(created_at)                           AS oldest_created_at,
       CASE WHEN status IN ('queued', 'retrying')
            THEN now() - min(run_at) FILTER (WHERE run_at <= now())
       END                                       AS oldest_due_age
FROM (
    -- Each WHERE is the predicate of the partial index that answers it.
    SELECT queue, status, priority, run_at, created_at FROM jobs WHERE status = 'waiting'
    UNION ALL
    SELECT queue, status, priority, run_at, created_at FROM jobs WHERE status IN ('queued', 'retrying')
    UNION ALL
    SELECT queue, status, priority, run_at, created_at FROM jobs WHERE status = 'running'
    UNION ALL
    SELECT queue, status, priority, run_at, created_at FROM jobs WHERE status = 'dead'
) AS unfinished
GROUP BY queue, status, priority;

COMMENT ON VIEW queue_stats IS
    'Jobs per queue, status and priority for the statuses still to run or to decide on (waiting, queued, running, retrying, dead), with how long the oldest due job has waited. Reads partial indexes only; finished jobs: job_status_estimates.';
