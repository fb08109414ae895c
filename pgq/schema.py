"""The pgq tables as SQLAlchemy Core metadata: public API for services and DBAs.

``pgq.schema.jobs``, ``workers``, ``job_executions``, ``dead_letter_queue``,
``job_dependencies``, ``worker_health_logs`` and ``state_snapshots`` let a
service (a dashboard, a report, a repair script) read pgq's tables with
composed SQLAlchemy Core queries instead of SQL strings; the README's
"Querying the tables with SQLAlchemy" shows one, and a test runs it. State
changes go through the stored functions (``pgq.Queue`` or SQL), never through
writes to these tables. The tables are created by the Alembic revisions under
``migrations/``, never from this metadata; ``tests/integration/test_migrations.py``
checks that it matches a migrated database (columns, types, keys, checks,
indexes, comments, enum labels). Constraint and index names follow Postgres'
defaults (``jobs_pkey``), which the naming convention below reproduces. For a
schema other than ``pgq`` run statements with
``execution_options(schema_translate_map=schema_translate_map(name))``.
pgq's own runtime does not import this module (nor SQLAlchemy).
"""
from __future__ import annotations

from sqlalchemy import (
    REAL,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, ENUM, INTERVAL, JSONB

from pgq.job import JobStatus

SCHEMA = "pgq"

# Postgres' default names, so that metadata and database agree without
# naming every constraint by hand. Check constraints carry their own full name.
NAMING_CONVENTION = {
    "pk": "%(table_name)s_pkey",
    "fk": "%(table_name)s_%(column_0_name)s_fkey",
    "uq": "%(table_name)s_%(column_0_N_name)s_key",
    "ix": "%(table_name)s_%(column_0_N_name)s_idx",
    "ck": "%(constraint_name)s",
}

metadata = MetaData(schema=SCHEMA, naming_convention=NAMING_CONVENTION)


def schema_translate_map(schema: str) -> dict[str | None, str]:
    """The ``schema_translate_map`` execution option that points this metadata at ``schema``."""
    return {SCHEMA: schema}


job_status = ENUM(
    *(s.value for s in JobStatus), name="job_status", metadata=metadata, create_type=False
)
worker_status_enum = ENUM(
    "active", "draining", "stale", "stopped", name="worker_status_enum", metadata=metadata, create_type=False
)
attempt_outcome = ENUM(
    "completed", "failed", "timed_out", "lost", "cancelled", "interrupted",
    name="attempt_outcome", metadata=metadata, create_type=False,
)

_TZ = DateTime(timezone=True)
_NOW = text("now()")
_EMPTY_OBJECT = text("'{}'::jsonb")
_LIVE = "status IN ('waiting', 'queued', 'running', 'retrying')"

jobs = Table(
    "jobs",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("queue", Text, nullable=False, server_default=text("'default'")),
    Column("task", Text, nullable=False),
    Column("payload", JSONB, nullable=False, server_default=_EMPTY_OBJECT),
    Column("priority", SmallInteger, nullable=False, server_default=text("3")),
    Column("status", job_status, nullable=False, server_default=text("'queued'")),
    Column("run_at", _TZ, nullable=False, server_default=_NOW),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("max_attempts", Integer, nullable=False, server_default=text("3")),
    Column("timeout", INTERVAL),
    Column("retry_base_seconds", Double),
    Column("retry_factor", Double),
    Column("retry_max_seconds", Double),
    Column("retry_jitter", Double),
    Column("unique_key", Text),
    Column("worker_id", Uuid),
    Column("started_at", _TZ),
    Column("finished_at", _TZ),
    Column("result", JSONB),
    Column("last_error", Text),
    Column("created_at", _TZ, nullable=False, server_default=_NOW),
    Column("updated_at", _TZ, nullable=False, server_default=_NOW),
    # Revision 0005: 1, plus 1 per requeue from the dead letter queue.
    Column("life", Integer, nullable=False, server_default=text("1")),
    # Revision 0006: the claim's position in its worker's claims, and the rescues
    # that gave the attempt back (the handler had not started).
    Column("claim_position", BigInteger),
    Column("free_rescues", Integer, nullable=False, server_default=text("0")),
    # Revision 0009: the priority lent by waiting descendants (NULL: none); 0012: and aging.
    Column("effective_priority", SmallInteger),
    # Revision 0012: the job's group (a tenant, a customer) for per-group rules and fair share.
    Column("group_key", Text, comment="The job's group (a tenant, a customer), or NULL: its queue's per-group "
                                      "limits and fair share count it in this group."),
    CheckConstraint("queue ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]*$' AND length(queue) <= 100", name="jobs_queue_name"),
    CheckConstraint("task ~ '^[A-Za-z_][A-Za-z0-9_.:-]*$' AND length(task) <= 200", name="jobs_task_name"),
    CheckConstraint("jsonb_typeof(payload) = 'object'", name="jobs_payload_object"),
    CheckConstraint("priority BETWEEN 1 AND 5", name="jobs_priority_range"),
    CheckConstraint("effective_priority BETWEEN 1 AND 5", name="jobs_effective_priority_range"),
    CheckConstraint("attempts >= 0 AND attempts <= max_attempts", name="jobs_attempts_range"),
    CheckConstraint("max_attempts >= 1", name="jobs_max_attempts_positive"),
    CheckConstraint("timeout > interval '0'", name="jobs_timeout_positive"),
    CheckConstraint("retry_base_seconds > 0", name="jobs_retry_base_positive"),
    CheckConstraint("retry_factor >= 1", name="jobs_retry_factor_range"),
    CheckConstraint("retry_max_seconds >= coalesce(retry_base_seconds, 0)", name="jobs_retry_max_range"),
    CheckConstraint("retry_jitter >= 0 AND retry_jitter < 1", name="jobs_retry_jitter_range"),
    CheckConstraint("length(unique_key) BETWEEN 1 AND 200", name="jobs_unique_key_length"),
    CheckConstraint(
        "status <> 'running' OR (worker_id IS NOT NULL AND started_at IS NOT NULL)", name="jobs_running_has_owner"
    ),
    # Revision 0003: finite run_at and backoff, payload backstop (8 MiB stored).
    CheckConstraint("isfinite(run_at)", name="jobs_run_at_finite"),
    CheckConstraint(
        "retry_base_seconds < 'Infinity' AND retry_factor < 'Infinity' AND retry_max_seconds < 'Infinity'",
        name="jobs_retry_finite",
    ),
    CheckConstraint("pg_column_size(payload) <= 8388608", name="jobs_payload_size"),
    CheckConstraint("length(group_key) BETWEEN 1 AND 200", name="jobs_group_key_length"),
    comment="One row per job: what to run, its status, attempts, owner and outcome. The queue itself.",
    postgresql_with={"fillfactor": 50},
)
# Claim order of get_runnable_jobs, over runnable rows only: the effective priority
# (revision 0012; before, the priority).
_EFFECTIVE = text("greatest(priority, effective_priority) DESC")
Index(
    "jobs_claim_idx", jobs.c.queue, _EFFECTIVE, jobs.c.run_at, jobs.c.id,
    postgresql_where=text("status IN ('queued', 'retrying')"),
)
# Revision 0012: a queue's groups and their jobs in claim order (lock_group_jobs).
Index(
    "jobs_group_claim_idx", jobs.c.queue, jobs.c.group_key, _EFFECTIVE, jobs.c.run_at, jobs.c.id,
    postgresql_where=text("status IN ('queued', 'retrying') AND group_key IS NOT NULL"),
)
# Rescue and timeouts: running jobs of a worker.
Index("jobs_running_idx", jobs.c.worker_id, postgresql_where=text("status = 'running'"))
# At most one live job per unique_key.
Index("jobs_unique_key_idx", jobs.c.unique_key, unique=True,
      postgresql_where=text(f"unique_key IS NOT NULL AND {_LIVE}"))
# Revision 0005: retention pruning, oldest first (prune_jobs).
Index("jobs_finished_idx", jobs.c.finished_at, postgresql_where=text("status IN ('completed', 'cancelled')"))
# Revision 0005: dead jobs (purge_dead_jobs, bulk requeue, queue_stats), and a
# newer dead holder of a unique key (bulk requeue).
Index("jobs_dead_idx", jobs.c.finished_at, postgresql_where=text("status = 'dead'"))
Index("jobs_dead_unique_key_idx", jobs.c.unique_key, jobs.c.id,
      postgresql_where=text("status = 'dead' AND unique_key IS NOT NULL"))
# Revision 0005: waiting jobs (queue_stats).
Index("jobs_waiting_idx", jobs.c.queue, postgresql_where=text("status = 'waiting'"))

workers = Table(
    "workers",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("hostname", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("queues", ARRAY(Text), nullable=False),
    Column("capacity", Integer, nullable=False, server_default=text("1")),
    Column("current_load", Integer, nullable=False, server_default=text("0")),
    Column("status", worker_status_enum, nullable=False, server_default=text("'active'")),
    Column("health_score", REAL, nullable=False, server_default=text("1.0")),
    Column("last_heartbeat", _TZ, nullable=False, server_default=_NOW),
    Column("started_at", _TZ, nullable=False, server_default=_NOW),
    Column("stopped_at", _TZ),
    Column("metadata", JSONB, nullable=False, server_default=_EMPTY_OBJECT),
    Column("created_at", _TZ, nullable=False, server_default=_NOW),
    Column("updated_at", _TZ, nullable=False, server_default=_NOW),
    # Revision 0006: the worker's "started through" watermark, and its drain request.
    Column("started_through", BigInteger, nullable=False, server_default=text("0")),
    Column("drain_requested_at", _TZ),
    # Revision 0007: sync handlers running on past their timeout (threads replaced).
    Column("stuck_handlers", Integer, nullable=False, server_default=text("0")),
    CheckConstraint("capacity >= 1", name="workers_capacity_positive"),
    CheckConstraint("current_load >= 0", name="workers_load_nonnegative"),
    CheckConstraint("health_score BETWEEN 0 AND 1", name="workers_health_range"),
    CheckConstraint("cardinality(queues) >= 1", name="workers_queues_nonempty"),
    # Revision 0003: every element a queue name (see the migration), metadata an object.
    CheckConstraint("array_position(queues, NULL) IS NULL AND strpos(array_to_string(queues, ''), ',') = 0"
                    " AND (cardinality(queues) = 0"
                    "      OR array_to_string(queues, ',') ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]*(,[A-Za-z0-9][A-Za-z0-9_.:-]*)*$')",
                    name="workers_queue_names"),
    CheckConstraint("jsonb_typeof(metadata) = 'object'", name="workers_metadata_object"),
    CheckConstraint("stuck_handlers >= 0", name="workers_stuck_handlers_nonnegative"),
    comment="Registry of worker processes, their heartbeats and health.",
)
# Stale sweep: live workers by heartbeat age.
Index("workers_live_heartbeat_idx", workers.c.last_heartbeat,
      postgresql_where=text("status IN ('active', 'draining')"))

job_executions = Table(
    "job_executions",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    # No foreign key to jobs on purpose (see migration 0001).
    Column("job_id", BigInteger, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("worker_id", Uuid),
    Column("started_at", _TZ, nullable=False),
    Column("finished_at", _TZ, nullable=False),
    Column("duration_ms", Double, Computed("extract(epoch FROM (finished_at - started_at)) * 1000", persisted=True)),
    Column("outcome", attempt_outcome, nullable=False),
    Column("error_type", Text),
    Column("error_message", Text),
    Column("traceback", Text),
    # Revision 0005: the job's life the attempt belongs to (no default: writers name it).
    Column("life", Integer, nullable=False),
    CheckConstraint("attempt >= 1", name="job_executions_attempt_positive"),
    comment="One row per finished attempt of a job; the running attempt is on the jobs row.",
)
# Not unique: a job requeued from the dead letter queue counts its attempts from 1
# again (in a new life), and nothing stops a repair from writing a row twice.
Index("job_executions_job_attempt_idx", job_executions.c.job_id, job_executions.c.attempt)

dead_letter_queue = Table(
    "dead_letter_queue",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("job_id", BigInteger, ForeignKey(jobs.c.id, ondelete="CASCADE"), nullable=False),
    Column("queue", Text, nullable=False),
    Column("task", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("last_error", Text),
    Column("error_history", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("moved_at", _TZ, nullable=False, server_default=_NOW),
    Column("requeued_at", _TZ),
    CheckConstraint("reason IN ('exhausted', 'fatal')", name="dead_letter_queue_reason"),
    comment="Jobs that exhausted their attempts or failed fatally, with their error history.",
)
Index("dead_letter_queue_open_idx", dead_letter_queue.c.moved_at, postgresql_where=text("requeued_at IS NULL"))
Index("dead_letter_queue_open_job_idx", dead_letter_queue.c.job_id, unique=True,
      postgresql_where=text("requeued_at IS NULL"))
# Revision 0005: the ON DELETE CASCADE from jobs looks dead letters up by job_id.
Index("dead_letter_queue_job_idx", dead_letter_queue.c.job_id)

job_dependencies = Table(
    "job_dependencies",
    metadata,
    Column("parent_id", BigInteger, ForeignKey(jobs.c.id, ondelete="CASCADE"), nullable=False),
    Column("child_id", BigInteger, ForeignKey(jobs.c.id, ondelete="CASCADE"), nullable=False),
    Column("created_at", _TZ, nullable=False, server_default=_NOW),
    PrimaryKeyConstraint("parent_id", "child_id"),
    CheckConstraint("parent_id <> child_id", name="job_dependencies_no_self"),
    comment="Edges of the job graph: the child runs after the parent completed.",
)
Index("job_dependencies_child_idx", job_dependencies.c.child_id)

worker_health_logs = Table(
    "worker_health_logs",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("worker_id", Uuid, nullable=False),
    Column("metric_type", Text, nullable=False),
    Column("metric_value", Double, nullable=False),
    Column("metadata", JSONB, nullable=False, server_default=_EMPTY_OBJECT),
    Column("logged_at", _TZ, nullable=False, server_default=_NOW),
    # Revision 0008 (issue 11): one heartbeat's health sample per row (metric_type 'heartbeat').
    Column("interval_seconds", REAL, comment="Seconds since the worker's previous sample (what the counts cover)."),
    Column("jobs_completed", Integer, comment='Completions the worker committed since its previous sample.'),
    Column("jobs_failed", Integer, comment='Failures (retried or dead) the worker committed since its previous sample.'),
    Column("error_rate", REAL, comment='jobs_failed / (jobs_completed + jobs_failed), 0 to 1; NULL when no job finished.'),
    Column("latency_p50_ms", REAL, comment='Median handler run time of the jobs that finished in the interval (ms).'),
    Column("latency_p95_ms", REAL, comment='95th percentile handler run time of the jobs that finished in the interval (ms).'),
    Column("claim_rtt_ms", REAL, comment='Mean claim round trip in the interval (ms).'),
    Column("ack_rtt_ms", REAL, comment='Mean outcome write (complete_jobs / fail_job) round trip in the interval (ms).'),
    Column("ack_lag_ms", REAL, comment="Longest time an outcome waited from the handler's return to its commit (ms)."),
    Column("in_flight", Integer, comment='Jobs the worker held (buffered, running, outcome not written) at the sample.'),
    Column("capacity", Integer, comment="The worker's concurrency at the sample."),
    Column("stuck_handlers", Integer, comment='Sync handlers running past their timeout at the sample.'),
    Column("rss_bytes", BigInteger, comment='Resident memory of the worker process at the sample (bytes).'),
    Column("cpu_percent", REAL, comment='CPU time of the worker process over the interval, in % of one core.'),
    Column("loop_lag_ms", REAL, comment="Longest delay of the async handlers' event loop in the interval (ms); NULL without one."),
    Column("health_score", REAL, comment="The worker's health score at the sample, 0 (failing below 0.3) to 1 (docs/health.md)."),
    CheckConstraint(
        "interval_seconds >= 0 AND jobs_completed >= 0 AND jobs_failed >= 0"
        " AND error_rate BETWEEN 0 AND 1 AND health_score BETWEEN 0 AND 1"
        " AND latency_p50_ms >= 0 AND latency_p95_ms >= 0 AND claim_rtt_ms >= 0 AND ack_rtt_ms >= 0"
        " AND ack_lag_ms >= 0 AND in_flight >= 0 AND capacity >= 0 AND stuck_handlers >= 0"
        " AND rss_bytes >= 0 AND cpu_percent >= 0 AND loop_lag_ms >= 0"
        " AND 'NaN'::real NOT IN (interval_seconds, error_rate, latency_p50_ms, latency_p95_ms, claim_rtt_ms,"
        " ack_rtt_ms, ack_lag_ms, cpu_percent, loop_lag_ms, health_score)",
        name="worker_health_logs_sample_ranges"),
    comment="Time series of worker metrics (jobs/s, error rate, latency, memory, load).",
)
Index("worker_health_logs_worker_metric_idx", worker_health_logs.c.worker_id, worker_health_logs.c.metric_type,
      worker_health_logs.c.logged_at.desc())
Index("worker_health_logs_logged_at_brin", worker_health_logs.c.logged_at, postgresql_using="brin")

# Revision 0008 (issue 11): the alert rules the view health_alerts evaluates.
alert_rules = Table(
    "alert_rules",
    metadata,
    Column("rule", Text, primary_key=True, comment="Rule name (the view knows how to measure each)."),
    Column("severity", Text, nullable=False, comment="warning or critical (pgq health --check exits 1 or 2)."),
    Column("threshold", Double, nullable=False, comment="The rule fires when its measured value is above this."),
    Column("window_seconds", Double, nullable=False, server_default=text("3600"),
           comment="How far back the rule looks (rules that measure a window)."),
    Column("enabled", Boolean, nullable=False, server_default=text("true"),
           comment="False: the view leaves the rule out."),
    Column("description", Text, nullable=False, comment="What the rule watches, for people."),
    CheckConstraint("severity IN ('warning', 'critical')", name="alert_rules_severity"),
    CheckConstraint("window_seconds > 0", name="alert_rules_window_positive"),
    CheckConstraint("threshold > '-Infinity' AND threshold < 'Infinity'", name="alert_rules_threshold_finite"),
    comment="Alert rules evaluated by the view health_alerts; a DBA tunes threshold, severity, window or enabled.",
)

state_snapshots = Table(
    "state_snapshots",
    metadata,
    Column("id", Uuid, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("snapshot_type", Text, nullable=False),
    Column("origin", Text, nullable=False, server_default=text("'manual'::text")),
    Column("base_snapshot_id", Uuid, ForeignKey("state_snapshots.id", ondelete="CASCADE")),
    Column("full_snapshot_id", Uuid, ForeignKey("state_snapshots.id", ondelete="CASCADE")),
    Column("created_at", _TZ, nullable=False, server_default=_NOW),
    Column("format_version", Integer, nullable=False),
    Column("schema_revision", Text, nullable=False),
    Column("db_snapshot", Text, nullable=False),
    Column("metadata", JSONB, nullable=False, server_default=_EMPTY_OBJECT),
    Column("body", LargeBinary, nullable=False),
    Column("body_sha256", Text, nullable=False),
    CheckConstraint("snapshot_type IN ('FULL', 'INCREMENTAL')", name="state_snapshots_type"),
    CheckConstraint("origin IN ('manual', 'auto', 'import')", name="state_snapshots_origin"),
    CheckConstraint(
        "(snapshot_type = 'FULL' AND base_snapshot_id IS NULL AND full_snapshot_id IS NULL)"
        " OR (snapshot_type = 'INCREMENTAL' AND base_snapshot_id IS NOT NULL AND full_snapshot_id IS NOT NULL)",
        name="state_snapshots_chain"),
    CheckConstraint("format_version >= 1", name="state_snapshots_format_version_positive"),
    comment="FULL and INCREMENTAL snapshots of queue state (non-terminal jobs, dependency edges, workers), for restore.",
)
Index("state_snapshots_created_at_idx", state_snapshots.c.created_at.desc())
Index("state_snapshots_full_snapshot_idx", state_snapshots.c.full_snapshot_id)
Index("state_snapshots_base_snapshot_idx", state_snapshots.c.base_snapshot_id)

# Revision 0010: queue pauses (pgq.scheduling.pause); a queue is paused while resumed_at is NULL.
queue_pauses = Table(
    "queue_pauses",
    metadata,
    Column("queue", Text, primary_key=True),
    Column("paused_at", _TZ, nullable=False),
    Column("paused_by", Text, nullable=False),
    Column("paused_by_application", Text, nullable=False),
    Column("resumed_at", _TZ),
    Column("resumed_by", Text),
    Column("resumed_by_application", Text),
    CheckConstraint("queue ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]*$' AND length(queue) <= 100",
                    name="queue_pauses_queue_name"),
    CheckConstraint("resumed_at IS NULL OR resumed_at >= paused_at", name="queue_pauses_resumed_after_paused"),
    comment="Queue pauses (pause_queue, resume_queue): a queue is paused while its row has no resumed_at. "
            "The claim functions take no job of a paused queue. Write it through the functions.",
)

# Revision 0010: periodic (cron) schedules (pgq.scheduling.cron).
schedules = Table(
    "schedules",
    metadata,
    Column("name", Text, primary_key=True),
    Column("cron", Text, nullable=False),
    Column("timezone", Text, nullable=False, server_default=text("'UTC'")),
    Column("task", Text, nullable=False),
    Column("payload", JSONB, nullable=False, server_default=_EMPTY_OBJECT),
    Column("queue", Text, nullable=False, server_default=text("'default'")),
    Column("priority", SmallInteger, nullable=False, server_default=text("3")),
    Column("max_attempts", Integer, nullable=False, server_default=text("3")),
    Column("catch_up", Text, nullable=False, server_default=text("'once'")),
    Column("catch_up_limit", Integer, nullable=False, server_default=text("100")),
    Column("misfire_grace_seconds", Double, nullable=False, server_default=text("60")),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("next_tick", _TZ),
    Column("last_tick", _TZ),
    Column("last_job_id", BigInteger),
    Column("ticked_at", _TZ),
    Column("created_at", _TZ, nullable=False, server_default=_NOW),
    Column("updated_at", _TZ, nullable=False, server_default=_NOW),
    CheckConstraint("name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]*$' AND length(name) <= 100", name="schedules_name"),
    CheckConstraint("length(cron) BETWEEN 1 AND 200", name="schedules_cron_length"),
    CheckConstraint("task ~ '^[A-Za-z_][A-Za-z0-9_.:-]*$' AND length(task) <= 200", name="schedules_task_name"),
    CheckConstraint("jsonb_typeof(payload) = 'object'", name="schedules_payload_object"),
    CheckConstraint("queue ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]*$' AND length(queue) <= 100", name="schedules_queue_name"),
    CheckConstraint("priority BETWEEN 1 AND 5", name="schedules_priority_range"),
    CheckConstraint("max_attempts >= 1", name="schedules_max_attempts_positive"),
    CheckConstraint("catch_up IN ('skip', 'once', 'all')", name="schedules_catch_up"),
    CheckConstraint("catch_up_limit BETWEEN 1 AND 10000", name="schedules_catch_up_limit_range"),
    CheckConstraint("misfire_grace_seconds >= 0 AND misfire_grace_seconds < 'Infinity'::double precision",
                    name="schedules_misfire_grace_range"),
    comment="Periodic (cron) schedules: the maintenance leader enqueues one job per tick (enqueue_schedule_ticks). "
            "Applications register them (register_schedule); DBAs may edit them (set next_tick to NULL after "
            "changing cron).",
)
Index("schedules_next_tick_idx", schedules.c.next_tick, postgresql_where=text("enabled"))

# Revision 0012: claim rules per queue (pgq.scheduling.policy) and per group.
queue_policies = Table(
    "queue_policies",
    metadata,
    Column("queue", Text, primary_key=True),
    Column("max_running", Integer),
    Column("rate_limit", Integer),
    Column("rate_period", INTERVAL),
    Column("group_max_running", Integer),
    Column("group_rate_limit", Integer),
    Column("group_rate_period", INTERVAL),
    Column("fair_share", Boolean, nullable=False, server_default=text("false")),
    Column("aging_step", INTERVAL),
    Column("tokens", Double),
    Column("refilled_at", _TZ),
    Column("created_at", _TZ, nullable=False, server_default=_NOW),
    Column("updated_at", _TZ, nullable=False, server_default=_NOW),
    Column("has_claim_rules", Boolean, Computed(
        "max_running IS NOT NULL OR rate_limit IS NOT NULL OR group_max_running IS NOT NULL "
        "OR group_rate_limit IS NOT NULL OR fair_share", persisted=True)),
    CheckConstraint("queue ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]*$' AND length(queue) <= 100",
                    name="queue_policies_queue_name"),
    CheckConstraint("max_running BETWEEN 1 AND 1000000", name="queue_policies_max_running_range"),
    CheckConstraint("group_max_running BETWEEN 1 AND 1000000", name="queue_policies_group_max_running_range"),
    CheckConstraint("rate_limit BETWEEN 1 AND 1000000", name="queue_policies_rate_limit_range"),
    CheckConstraint("group_rate_limit BETWEEN 1 AND 1000000", name="queue_policies_group_rate_limit_range"),
    CheckConstraint("rate_period >= interval '1 millisecond' AND rate_period <= interval '1 day'",
                    name="queue_policies_rate_period_range"),
    CheckConstraint("group_rate_period >= interval '1 millisecond' AND group_rate_period <= interval '1 day'",
                    name="queue_policies_group_rate_period_range"),
    CheckConstraint("(rate_limit IS NULL) = (rate_period IS NULL)", name="queue_policies_rate_pair"),
    CheckConstraint("(group_rate_limit IS NULL) = (group_rate_period IS NULL)", name="queue_policies_group_rate_pair"),
    CheckConstraint("aging_step >= interval '1 millisecond' AND aging_step <= interval '30 days'",
                    name="queue_policies_aging_step_range"),
    comment="Claim rules per queue (set_queue_policy, clear_queue_policy): limits, rate limits, per-group rules, "
            "fair share, aging. Every claim obeys them (lock_policy_jobs); a queue with a policy is claimed from "
            "Postgres only.",
)

group_states = Table(
    "group_states",
    metadata,
    Column("queue", Text, ForeignKey("queue_policies.queue", ondelete="CASCADE"), nullable=False),
    Column("group_key", Text, nullable=False),
    Column("weight", Double, nullable=False, server_default=text("1")),
    Column("vtime", Double, nullable=False, server_default=text("0")),
    Column("tokens", Double),
    Column("refilled_at", _TZ),
    PrimaryKeyConstraint("queue", "group_key"),
    CheckConstraint("length(group_key) <= 200", name="group_states_group_key_length"),
    CheckConstraint("weight > 0 AND weight <= 1000000", name="group_states_weight_range"),
    comment="Per queue and group: fair-share weight (set_group_weight) and the claim's state (virtual time, "
            "rate bucket).",
)

TABLES = (jobs, workers, job_executions, dead_letter_queue, job_dependencies, worker_health_logs, state_snapshots,
          alert_rules, queue_pauses, schedules, queue_policies, group_states)

__all__ = [
    "NAMING_CONVENTION",
    "SCHEMA",
    "TABLES",
    "alert_rules",
    "attempt_outcome",
    "dead_letter_queue",
    "group_states",
    "job_dependencies",
    "job_executions",
    "job_status",
    "jobs",
    "metadata",
    "queue_pauses",
    "queue_policies",
    "schedules",
    "schema_translate_map",
    "state_snapshots",
    "worker_health_logs",
    "worker_status_enum",
    "workers",
]
