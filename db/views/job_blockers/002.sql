-- pgq.job_blockers
-- For every job not finished and not running (waiting, queued, retrying): why
-- it is not running now, and for a waiting job the parents it waits on.
--   reason   'waiting on parent'    status waiting: parents not completed yet
--                                   (waiting_on lists them, parent_statuses their status)
--            'not yet due'          queued with run_at in the future (delay, run_at)
--            'retrying backoff'     retrying with run_at in the future
--            'queue paused'         its queue is paused (pause_queue)
--            'queue max_running'    its queue runs max_running jobs already (queue_policies)
--            'queue rate limit'     its queue's rate limit has no token left now
--            'group max_running'    its group (group_key) runs group_max_running jobs already
--            'group rate limit'     its group's rate limit has no token left now
--            'runnable'             due now: a worker claims it when one has room
--                                   (in claim order: effective priority, run_at, id;
--                                   or its group's fair share)
-- effective_priority is the one the claim orders by: the job's own priority,
-- raised by waiting descendants (lend_priority) and aging (age_jobs).
-- Filter on job_id: the view reads that job, its parents and its queue's
-- rules by key (a limit's running jobs through jobs_running_idx).
-- Revision 002 (0012): the claim rules' reasons, group_key.
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
           WHEN EXISTS (SELECT 1 FROM queue_pauses AS qp WHERE qp.queue = j.queue AND qp.resumed_at IS NULL)
               THEN 'queue paused'
           WHEN r.max_running IS NOT NULL
                AND (SELECT count(*) FROM jobs AS x WHERE x.status = 'running' AND x.queue = j.queue) >= r.max_running
               THEN 'queue max_running'
           WHEN r.rate_limit IS NOT NULL
                AND token_refill(r.tokens, r.refilled_at, r.rate_limit, r.rate_period, now()) < 1
               THEN 'queue rate limit'
           WHEN r.group_max_running IS NOT NULL
                AND (SELECT count(*) FROM jobs AS x WHERE x.status = 'running' AND x.queue = j.queue
                       AND x.group_key IS NOT DISTINCT FROM j.group_key) >= r.group_max_running
               THEN 'group max_running'
           WHEN r.group_rate_limit IS NOT NULL
                AND (SELECT token_refill(g.tokens, g.refilled_at, r.group_rate_limit, r.group_rate_period, now())
                     FROM group_states AS g
                     WHERE g.queue = j.queue AND g.group_key = coalesce(j.group_key, '')) < 1
               THEN 'group rate limit'
           ELSE 'runnable'
       END                                                    AS reason,
       j.run_at,
       j.priority,
       greatest(j.priority, j.effective_priority)             AS effective_priority,
       p.waiting_on,
       p.parent_statuses,
       j.group_key
FROM jobs AS j
LEFT JOIN queue_policies AS r ON r.queue = j.queue
LEFT JOIN LATERAL (
    SELECT array_agg(d.parent_id ORDER BY d.parent_id)              AS waiting_on,
           array_agg(pj.status::text ORDER BY d.parent_id)          AS parent_statuses
    FROM job_dependencies AS d JOIN jobs AS pj ON pj.id = d.parent_id
    WHERE d.child_id = j.id AND pj.status <> 'completed'
) AS p ON j.status = 'waiting'
WHERE j.status IN ('waiting', 'queued', 'retrying');

COMMENT ON VIEW job_blockers IS
    'Why each waiting, queued or retrying job is not running: waiting on parent (waiting_on: their ids), not yet due, retrying backoff, queue paused, a queue or group limit or rate limit, or runnable; with its effective priority and group.';
