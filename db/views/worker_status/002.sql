-- pgq.worker_status
-- Every worker with its heartbeat age, load, health and running job count.
-- Revision 0007 adds stuck_handlers (the last column): sync handlers still
-- running past their job's timeout, whose threads the worker replaced (see
-- set_worker_stuck_handlers).
-- Example: SELECT * FROM pgq.worker_status WHERE status = 'active' ORDER BY heartbeat_age DESC;
CREATE OR REPLACE VIEW worker_status AS
SELECT w.id,
       w.hostname,
       w.pid,
       w.status,
       w.queues,
       w.capacity,
       w.current_load,
       (SELECT count(*) FROM jobs AS j WHERE j.status = 'running' AND j.worker_id = w.id) AS running_jobs,
       w.health_score,
       w.last_heartbeat,
       now() - w.last_heartbeat AS heartbeat_age,
       w.started_at,
       w.stopped_at,
       w.stuck_handlers
FROM workers AS w;

COMMENT ON VIEW worker_status IS 'Workers with heartbeat age, load, health, the number of jobs they are running and of their stuck handlers.';
