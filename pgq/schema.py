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
    CheckConstraint("queue ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]*$' AND length(queue) <= 100", name="jobs_queue_name"),
    CheckConstraint("task ~ '^[A-Za-z_][A-Za-z0-9_.:-]*$' AND length(task) <= 200", name="jobs_task_name"),
    CheckConstraint("jsonb_typeof(payload) = 'object'", name="jobs_payload_object"),
    CheckConstraint("priority BETWEEN 1 AND 5", name="jobs_priority_range"),
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
    comment="One row per job: what to run, its status, attempts, owner and outcome. The queue itself.",
    postgresql_with={"fillfactor": 50},
)
# Claim order of get_runnable_jobs, over runnable rows only.
Index(
    "jobs_claim_idx", jobs.c.queue, jobs.c.priority.desc(), jobs.c.run_at, jobs.c.id,
    postgresql_where=text("status IN ('queued', 'retrying')"),
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
    comment="Time series of worker metrics (jobs/s, error rate, latency, memory, load).",
)
Index("worker_health_logs_worker_metric_idx", worker_health_logs.c.worker_id, worker_health_logs.c.metric_type,
      worker_health_logs.c.logged_at.desc())
Index("worker_health_logs_logged_at_brin", worker_health_logs.c.logged_at, postgresql_using="brin")

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

TABLES = (jobs, workers, job_executions, dead_letter_queue, job_dependencies, worker_health_logs, state_snapshots)

__all__ = [
    "NAMING_CONVENTION",
    "SCHEMA",
    "TABLES",
    "attempt_outcome",
    "dead_letter_queue",
    "job_dependencies",
    "job_executions",
    "job_status",
    "jobs",
    "metadata",
    "schema_translate_map",
    "state_snapshots",
    "worker_health_logs",
    "worker_status_enum",
    "workers",
]
