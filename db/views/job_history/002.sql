-- pgq.job_history
-- One row per attempt of every job: the finished attempts from
-- job_executions plus the running attempt from the jobs row, with the job's
-- current status beside each. A job requeued from the dead letter queue
-- starts a new life and numbers its attempts from 1 again: order by life,
-- then attempt.
-- Changed from 001: the life column (last, so that the view keeps its other
-- columns in place).
-- Example: SELECT * FROM pgq.job_history WHERE job_id = 42 ORDER BY life, attempt;
CREATE OR REPLACE VIEW job_history AS
SELECT j.id            AS job_id,
       j.queue,
       j.task,
       j.status        AS job_status,
       e.attempt,
       e.worker_id,
       e.started_at,
       e.finished_at,
       e.duration_ms,
       e.outcome::text AS outcome,
       e.error_type,
       e.error_message,
       e.traceback,
       e.life
FROM jobs AS j
JOIN job_executions AS e ON e.job_id = j.id
UNION ALL
SELECT j.id,
       j.queue,
       j.task,
       j.status,
       j.attempts,
       j.worker_id,
       j.started_at,
       NULL,
       extract(epoch FROM (now() - j.started_at)) * 1000,
       'running',
       NULL,
       NULL,
       NULL,
       j.life
FROM jobs AS j
WHERE j.status = 'running';

COMMENT ON VIEW job_history IS
    'Every attempt of every job (finished ones and the running one), by life and attempt, for "what happened to job X".';
