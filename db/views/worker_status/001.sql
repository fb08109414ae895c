-- pgq.worker_status
-- Every worker with its heartbeat age, load, health and running job count.
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
       w.stopped_at
FROM workers AS w;

COMMENT ON VIEW worker_status IS 'Workers with heartbeat age, load, health and the number of jobs they are running.';
