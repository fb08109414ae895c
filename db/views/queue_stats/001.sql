-- pgq.queue_stats
-- Depth per queue x status x priority, with the oldest job's age. For
-- queued/retrying rows, oldest_due_age is how long the oldest due job has
-- been waiting to be claimed (the number to alert on).
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
FROM jobs
GROUP BY queue, status, priority;

COMMENT ON VIEW queue_stats IS 'Jobs per queue, status and priority, with how long the oldest due job has waited.';
