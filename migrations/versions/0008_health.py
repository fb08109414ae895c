"""Worker health: each heartbeat records a health sample (issue 11).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

- ``worker_health_logs`` gains one nullable column per metric of a heartbeat's
  sample (a catalog-only change: nullable, no default, so no table rewrite),
  and a CHECK that keeps them in range (the table was empty until now: the
  check reads nothing worth mentioning). A sample is one row, metric_type
  'heartbeat', metric_value its health score; the older name/value shape still
  reads the same.
- Function ``heartbeat_worker_v3`` (``db/functions/heartbeat_worker_v3/001.sql``):
  ``heartbeat_worker_v2`` plus the sample, in one statement.
- Function ``prune_health_logs`` (``db/functions/prune_health_logs/001.sql``):
  the maintenance leader deletes samples past the retention, in batches.
- Table ``alert_rules`` (the alert thresholds of the design documents, one row
  per rule, for DBAs to tune) and view ``health_alerts``
  (``db/views/health_alerts/001.sql``) that evaluates them.
- Roles: ``db/roles/006.sql`` (definer, closed to PUBLIC, granted to
  ``<schema>_worker``; the view and the rules readable by ``<schema>_producer``).

The downgrade drops the view and the rules, the functions, then the columns
(and their samples).
"""

from alembic import op

from pgq.migrate import enter_schema, run_sql_file

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# (column, type, comment)
SAMPLE_COLUMNS = [
    ("interval_seconds", "real", "Seconds since the worker's previous sample (what the counts cover)."),
    ("jobs_completed", "integer", "Completions the worker committed since its previous sample."),
    ("jobs_failed", "integer", "Failures (retried or dead) the worker committed since its previous sample."),
    ("error_rate", "real", "jobs_failed / (jobs_completed + jobs_failed), 0 to 1; NULL when no job finished."),
    ("latency_p50_ms", "real", "Median handler run time of the jobs that finished in the interval (ms)."),
    ("latency_p95_ms", "real", "95th percentile handler run time of the jobs that finished in the interval (ms)."),
    ("claim_rtt_ms", "real", "Mean claim round trip in the interval (ms)."),
    ("ack_rtt_ms", "real", "Mean outcome write (complete_jobs / fail_job) round trip in the interval (ms)."),
    ("ack_lag_ms", "real", "Longest time an outcome waited from the handler's return to its commit (ms)."),
    ("in_flight", "integer", "Jobs the worker held (buffered, running, outcome not written) at the sample."),
    ("capacity", "integer", "The worker's concurrency at the sample."),
    ("stuck_handlers", "integer", "Sync handlers running past their timeout at the sample."),
    ("rss_bytes", "bigint", "Resident memory of the worker process at the sample (bytes)."),
    ("cpu_percent", "real", "CPU time of the worker process over the interval, in % of one core."),
    ("loop_lag_ms", "real", "Longest delay of the async handlers' event loop in the interval (ms); NULL without one."),
    ("health_score", "real", "The worker's health score at the sample, 0 (failing below 0.3) to 1 (docs/health.md)."),
]

CHECK = """
ALTER TABLE worker_health_logs ADD CONSTRAINT worker_health_logs_sample_ranges CHECK (
    interval_seconds >= 0 AND jobs_completed >= 0 AND jobs_failed >= 0
    AND error_rate BETWEEN 0 AND 1 AND health_score BETWEEN 0 AND 1
    AND latency_p50_ms >= 0 AND latency_p95_ms >= 0 AND claim_rtt_ms >= 0 AND ack_rtt_ms >= 0
    AND ack_lag_ms >= 0 AND in_flight >= 0 AND capacity >= 0 AND stuck_handlers >= 0
    AND rss_bytes >= 0 AND cpu_percent >= 0 AND loop_lag_ms >= 0
    AND 'NaN'::real NOT IN (interval_seconds, error_rate, latency_p50_ms, latency_p95_ms, claim_rtt_ms,
                             ack_rtt_ms, ack_lag_ms, cpu_percent, loop_lag_ms, health_score)
);
"""


ALERT_RULES = """
CREATE TABLE alert_rules (
    rule text PRIMARY KEY,
    severity text NOT NULL,
    threshold double precision NOT NULL,
    window_seconds double precision NOT NULL DEFAULT 3600,
    enabled boolean NOT NULL DEFAULT true,
    description text NOT NULL,
    CONSTRAINT alert_rules_severity CHECK (severity IN ('warning', 'critical')),
    CONSTRAINT alert_rules_window_positive CHECK (window_seconds > 0),
    CONSTRAINT alert_rules_threshold_finite CHECK (threshold > '-Infinity' AND threshold < 'Infinity')
);
COMMENT ON TABLE alert_rules IS
    'Alert rules evaluated by the view health_alerts; a DBA tunes threshold, severity, window or enabled.';
COMMENT ON COLUMN alert_rules.rule IS 'Rule name (the view knows how to measure each).';
COMMENT ON COLUMN alert_rules.severity IS 'warning or critical (pgq health --check exits 1 or 2).';
COMMENT ON COLUMN alert_rules.threshold IS 'The rule fires when its measured value is above this.';
COMMENT ON COLUMN alert_rules.window_seconds IS 'How far back the rule looks (rules that measure a window).';
COMMENT ON COLUMN alert_rules.enabled IS 'False: the view leaves the rule out.';
COMMENT ON COLUMN alert_rules.description IS 'What the rule watches, for people.';
INSERT INTO alert_rules (rule, severity, threshold, description) VALUES
    ('dlq_size', 'critical', 100, 'Open dead letters'),
    ('worker_failure_rate', 'critical', 0.10,
     'Share of the workers seen in the window that are failing (score < 0.3) or went stale'),
    ('queue_saturation', 'critical', 0.90, 'Running jobs / live capacity of a queue with due jobs waiting'),
    ('pool_usage', 'critical', 0.80, 'Server connections in use / max_connections'),
    ('retry_rate', 'warning', 0.05, 'Failed attempts / attempts in the window (health samples)'),
    ('duration_vs_baseline', 'warning', 2.0, 'A worker''s median run time of the last 5 minutes / its baseline'),
    ('heartbeat_timeouts', 'warning', 3, 'Workers marked stale in the window');
"""


def upgrade() -> None:
    enter_schema()
    op.execute("ALTER TABLE worker_health_logs "
               + ", ".join(f"ADD COLUMN {name} {kind}" for name, kind, _ in SAMPLE_COLUMNS))
    for name, _, comment in SAMPLE_COLUMNS:
        quoted = comment.replace("'", "''")
        op.execute(f"COMMENT ON COLUMN worker_health_logs.{name} IS '{quoted}'")
    op.execute(CHECK)
    run_sql_file("functions/heartbeat_worker_v3/001.sql")
    run_sql_file("functions/prune_health_logs/001.sql")
    op.execute(ALERT_RULES)
    run_sql_file("views/health_alerts/001.sql")
    run_sql_file("roles/006.sql")


def downgrade() -> None:
    enter_schema()
    op.execute("DROP VIEW health_alerts")
    op.execute("DROP TABLE alert_rules")
    op.execute("DROP FUNCTION prune_health_logs(interval, integer, timestamptz)")
    op.execute("DROP FUNCTION heartbeat_worker_v3(uuid, integer, bigint[], bigint, jsonb, timestamptz)")
    op.execute("DELETE FROM worker_health_logs WHERE metric_type = 'heartbeat'")
    op.execute("ALTER TABLE worker_health_logs DROP CONSTRAINT worker_health_logs_sample_ranges, "
               + ", ".join(f"DROP COLUMN {name}" for name, _, _ in SAMPLE_COLUMNS))
