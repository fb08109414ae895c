-- pgq.paused_queues
-- The queues paused now (pause_queue, `pgq queue pause`): since when and by
-- whom (the session user and application_name of the pausing session), with
-- the number of their jobs waiting to be claimed (queued or retrying, due or
-- not). A queue leaves the view when resume_queue commits.
-- Example: SELECT * FROM pgq.paused_queues ORDER BY paused_at;
CREATE OR REPLACE VIEW paused_queues AS
SELECT p.queue,
       p.paused_at,
       p.paused_by,
       p.paused_by_application,
       (SELECT count(*) FROM jobs AS j
        WHERE j.queue = p.queue AND j.status IN ('queued', 'retrying')) AS waiting_jobs
FROM queue_pauses AS p
WHERE p.resumed_at IS NULL;
COMMENT ON VIEW paused_queues IS
    'Queues paused now: since when, by whom (session user, application_name), and how many of their jobs wait (queued or retrying).';
