"""pgq: a Python job queue in which PostgreSQL is the queue.

    import pgq
    q = pgq.connect("postgresql://localhost/app")

    @q.task(queue="emails", max_attempts=5, retry=pgq.Backoff(base=1, factor=2, max=60))
    def send_email(to: str, body: str) -> dict: ...

    job_id = send_email.defer(to="a@b.c", body="hi")
    q.worker(concurrency=16).run()
"""

from pgq.errors import (
    BackendUnavailable,
    ConfigurationError,
    ContextStoreMismatch,
    ContextStoreUnavailable,
    DatabaseError,
    DatabaseUnavailable,
    DuplicateJob,
    EnqueueOutcomeUnknown,
    Fatal,
    InvalidGraph,
    InvalidTransition,
    JobFailed,
    JobNotFound,
    PgqError,
    RedisUnavailable,
    Retry,
    SchemaNotReady,
    StatementTimeout,
    TooManyStuckHandlers,
    UnknownTask,
    ValidationError,
    WaitTimeout,
    WorkerDraining,
)
from pgq.executor import JobContext, current_job
from pgq.job import Job, JobSpec, JobStatus, Ref, ref
from pgq.maintenance import Maintenance, MaintenanceReport
from pgq.queries import DeadLetter
from pgq.queue import Queue, Task, connect
from pgq.retry import Backoff
from pgq.settings import Settings
from pgq.stats import QueueStats
from pgq.worker import Worker

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable",
    "Backoff",
    "ConfigurationError",
    "ContextStoreMismatch",
    "ContextStoreUnavailable",
    "DatabaseError",
    "DatabaseUnavailable",
    "DeadLetter",
    "DuplicateJob",
    "EnqueueOutcomeUnknown",
    "Fatal",
    "InvalidGraph",
    "InvalidTransition",
    "Job",
    "JobContext",
    "JobFailed",
    "JobNotFound",
    "JobSpec",
    "JobStatus",
    "Maintenance",
    "MaintenanceReport",
    "PgqError",
    "Queue",
    "QueueStats",
    "RedisUnavailable",
    "Ref",
    "Retry",
    "SchemaNotReady",
    "Settings",
    "StatementTimeout",
    "Task",
    "TooManyStuckHandlers",
    "UnknownTask",
    "ValidationError",
    "WaitTimeout",
    "Worker",
    "WorkerDraining",
    "__version__",
    "connect",
    "current_job",
    "ref",
]
