-- pgq.collect_metrics(p_now)
-- What the queue exporter (`pgq metrics`) publishes, in one statement: one row
-- per value, named by metric, with the labels that apply (the others NULL).
--   jobs             queue, status, priority: jobs still to run or to decide on
--                    (waiting, queued, running, retrying, dead)
--   oldest_due_age   queue: seconds the oldest due queued or retrying job has
--                    waited to be claimed (0 when none is due)
--   dead_letters     queue: open dead letters (not requeued)
--   workers          status: workers per status (every status, 0 included)
--   worker_health    worker_id, status: the health score of each active or
--                    draining worker (0 failing .. 1 healthy)
-- Reads only partial indexes and the workers table (as queue_stats does), so
-- it costs what is live, not what retention keeps. Read-only.
-- Example: SELECT * FROM pgq.collect_metrics() WHERE metric = 'oldest_due_age';
CREATE OR REPLACE FUNCTION collect_metrics(p_now timestamptz DEFAULT now())
RETURNS TABLE (metric text, queue text, status text, priority integer, worker_id uuid, value double precision)
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $$
    WITH live AS (
        -- Each WHERE is the predicate of the partial index that answers it.
        SELECT j.queue, j.status, j.priority, j.run_at FROM jobs AS j WHERE j.status = 'waiting'
        UNION ALL
        SELECT j.queue, j.status, j.priority, j.run_at FROM jobs AS j WHERE j.status IN ('queued', 'retrying')
        UNION ALL
        SELECT j.queue, j.status, j.priority, j.run_at FROM jobs AS j WHERE j.status = 'running'
        UNION ALL
        SELECT j.queue, j.status, j.priority, j.run_at FROM jobs AS j WHERE j.status = 'dead'
    ), depth AS (
        SELECT l.queue, l.status, l.priority, count(*) AS jobs,
               min(l.run_at) FILTER (WHERE l.status IN ('queued', 'retrying') AND l.run_at <= p_now) AS oldest_due
        FROM live AS l
        GROUP BY l.queue, l.status, l.priority
    )
    SELECT 'jobs', d.queue, d.status::text, d.priority::integer, NULL::uuid, d.jobs::float8
    FROM depth AS d
    UNION ALL
    SELECT 'oldest_due_age', d.queue, NULL, NULL, NULL,
           coalesce(extract(epoch FROM p_now - min(d.oldest_due))::float8, 0)
    FROM depth AS d
    GROUP BY d.queue
    UNION ALL
    SELECT 'dead_letters', q.queue, NULL, NULL, NULL, count(*)::float8
    FROM dead_letter_queue AS q
    WHERE q.requeued_at IS NULL
    GROUP BY q.queue
    UNION ALL
    SELECT 'workers', NULL, s.status::text, NULL, NULL, count(w.id)::float8
    FROM unnest(enum_range(NULL::worker_status_enum)) AS s(status)
    LEFT JOIN workers AS w ON w.status = s.status
    GROUP BY s.status
    UNION ALL
    SELECT 'worker_health', NULL, w.status::text, NULL, w.id, w.health_score::float8
    FROM workers AS w
    WHERE w.status IN ('active', 'draining')
$$;
COMMENT ON FUNCTION collect_metrics(timestamptz) IS
    'The queue exporter''s values in one read: jobs per queue x status x priority (live and dead), oldest due age per queue (s), open dead letters per queue, workers per status, health score per active or draining worker. Reads partial indexes only.';
