-- pgq.health_alerts
-- The alert rules of alert_rules, evaluated now: one row per rule and subject
-- (the whole schema '*', a queue, or a worker id), with the measured value,
-- the rule's threshold and whether it fires (value > threshold). Disabled
-- rules are left out; a rule with nothing to measure (no sample in its
-- window, no worker on a queue) yields no row. `pgq health --check` reads it.
--
--   dlq_size              open dead letters
--   worker_failure_rate   share of the workers seen in the window that are failing:
--                         live with a health score below 0.3, or marked stale
--                         (missed heartbeats) within the window
--   queue_saturation      per queue: running jobs / capacity of its live
--                         workers, when due jobs are waiting (else 0)
--   pool_usage            server connections in use / max_connections
--   retry_rate            failed attempts (each retried or dead) / attempts,
--                         from the workers' health samples in the window
--                         (needs 20 attempts)
--   duration_vs_baseline  per worker: mean median run time of its samples of
--                         the last 5 minutes / its baseline (lower quartile of
--                         its samples' medians over the window)
--   heartbeat_timeouts    workers marked stale within the window (a worker that
--                         came back since is not counted)
-- Example: SELECT rule, severity, subject, value, threshold FROM pgq.health_alerts WHERE firing;
CREATE OR REPLACE VIEW health_alerts AS
WITH rules AS (
    SELECT r.rule, r.severity, r.threshold, r.window_seconds FROM alert_rules AS r WHERE r.enabled
), samples AS (
    SELECT l.worker_id, l.logged_at, l.jobs_completed, l.jobs_failed, l.latency_p50_ms
    FROM worker_health_logs AS l
    WHERE l.metric_type = 'heartbeat'
      AND l.logged_at > now() - make_interval(secs => (SELECT max(window_seconds) FROM rules))
), measured (rule, subject, value, detail) AS (
    SELECT 'dlq_size', '*', count(*)::float8, count(*) || ' open dead letter(s)'
    FROM dead_letter_queue AS d WHERE d.requeued_at IS NULL
    UNION ALL
    SELECT 'worker_failure_rate', '*', f.failing::float8 / f.seen,
           f.failing || ' of ' || f.seen || ' worker(s) failing or stale'
    FROM (SELECT count(*) FILTER (WHERE (w.status IN ('active', 'draining') AND w.health_score < 0.3)
                                     OR w.status = 'stale') AS failing,
                 count(*) AS seen
          FROM workers AS w, rules AS r
          WHERE r.rule = 'worker_failure_rate'
            AND (w.status IN ('active', 'draining')
                 OR coalesce(w.stopped_at, w.last_heartbeat) > now() - make_interval(secs => r.window_seconds))
         ) AS f
    WHERE f.seen > 0
    UNION ALL
    SELECT 'queue_saturation', c.queue,
           CASE WHEN EXISTS (SELECT 1 FROM jobs AS j WHERE j.queue = c.queue AND j.status IN ('queued', 'retrying')
                                                      AND j.run_at <= now())
                THEN (SELECT count(*) FROM jobs AS j WHERE j.queue = c.queue AND j.status = 'running')::float8
                     / c.capacity
                ELSE 0 END,
           'capacity ' || c.capacity || ' in ' || c.workers || ' live worker(s)'
    FROM (SELECT q.queue, sum(w.capacity) AS capacity, count(*) AS workers
          FROM workers AS w, unnest(w.queues) AS q(queue)
          WHERE w.status = 'active' GROUP BY q.queue) AS c
    UNION ALL
    SELECT 'pool_usage', '*', (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::float8
                              / current_setting('max_connections')::float8,
           current_setting('max_connections') || ' max_connections'
    UNION ALL
    SELECT 'retry_rate', '*', t.failed::float8 / t.attempts, t.failed || ' of ' || t.attempts || ' attempt(s) failed'
    FROM (SELECT sum(s.jobs_failed) AS failed, sum(s.jobs_completed) + sum(s.jobs_failed) AS attempts
          FROM samples AS s, rules AS r
          WHERE r.rule = 'retry_rate' AND s.logged_at > now() - make_interval(secs => r.window_seconds)) AS t
    WHERE t.attempts >= 20
    UNION ALL
    SELECT 'duration_vs_baseline', b.worker_id::text, b.recent / b.baseline,
           round(b.recent::numeric, 1) || ' ms now, baseline ' || round(b.baseline::numeric, 1) || ' ms'
    FROM (SELECT s.worker_id,
                 avg(s.latency_p50_ms) FILTER (WHERE s.logged_at > now() - interval '5 minutes') AS recent,
                 percentile_cont(0.25) WITHIN GROUP (ORDER BY s.latency_p50_ms) AS baseline,
                 count(s.latency_p50_ms) AS measured
          FROM samples AS s, rules AS r
          WHERE r.rule = 'duration_vs_baseline' AND s.logged_at > now() - make_interval(secs => r.window_seconds)
          GROUP BY s.worker_id) AS b
    JOIN workers AS w ON w.id = b.worker_id AND w.status IN ('active', 'draining')
    WHERE b.measured >= 5 AND b.baseline > 0 AND b.recent IS NOT NULL
    UNION ALL
    SELECT 'heartbeat_timeouts', '*', count(w.id)::float8, count(w.id) || ' worker(s) marked stale'
    FROM rules AS r LEFT JOIN workers AS w
      ON w.status = 'stale' AND w.stopped_at > now() - make_interval(secs => r.window_seconds)
    WHERE r.rule = 'heartbeat_timeouts'
)
SELECT r.rule, r.severity, m.subject, m.value, r.threshold, m.value > r.threshold AS firing, m.detail
FROM rules AS r JOIN measured AS m ON m.rule = r.rule;

COMMENT ON VIEW health_alerts IS 'The enabled alert rules of alert_rules evaluated now: rule, severity, subject (''*'', a queue or a worker), value, threshold, firing (value > threshold), detail.';
