-- pgq.job_blockers
-- For every job not finished and not running (waiting, queued, retrying): why
-- it is not running now, and for a waiting job the parents it waits on.
--   reason   'waiting on parent'  status waiting: parents not completed yet
--                                 (waiting_on lists them, parent_statuses their status)
--            'not yet due'        queued with run_at in the future (delay, run_at)
--            'retrying backoff'   retrying with run_at in the future
--            'runnable'           due now: a worker claims it when one has room
-- (A later revision adds the reasons of the claim's own rules, such as a
-- paused queue, when the claim gains them.) Filter on job_id: the view reads
-- that job and its parents by primary key.
-- Example: SELECT * FROM pgq.job_blockers WHERE job_id = 42;
CREATE OR REPLACE VIEW job_blockers AS
SELECT j.id                                                   AS job_id,
       j.queue,
       j.task,
       j.status,
       CASE
           WHEN j.status = 'waiting' THEN 'waiting on parent'
           WHEN j.run_at > now() AND j.status = 'retrying' THEN 'retrying backoff'
           WHEN j.run_at > now() THEN 'not yet due'
           ELSE 'runnable'
       END                                                    AS reason,
       j.run_at,
       j.priority,
       coalesce(j.effective_priority, j.priority)             AS effective_priority,
       p.waiting_on,
       p.parent_statuses
FROM jobs AS j
LEFT JOIN LATERAL (
    SELECT array_agg(d.parent_id ORDER BY d.parent_id)              AS waiting_on,
           array_agg(pj.status::text ORDER BY d.parent_id)          AS parent_statuses
    FROM job_dependencies AS d JOIN jobs AS pj ON pj.id = d.parent_id
    WHERE d.child_id = j.id AND pj.status <> 'completed'
) AS p ON j.status = 'waiting'
WHERE j.status IN ('waiting', 'queued', 'retrying');

COMMENT ON VIEW job_blockers IS
    'Why each waiting, queued or retrying job is not running: waiting on parent (waiting_on: their ids), not yet due, retrying backoff, or runnable.';
