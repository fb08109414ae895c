"""Everything pgq raises, and the signals a handler may raise to steer its job.

    PgqError                      base for everything pgq raises
      ConfigurationError          bad or inconsistent settings (names the variable)
        ContextStoreMismatch      the memory's Qdrant collection has another vector size
      SchemaNotReady              database is not at the migration head
      DatabaseError               driver failure; the original is on __cause__
        DatabaseUnavailable       the database could not be reached in time (worker start)
        StatementTimeout          a statement ran past PGQ_STATEMENT_TIMEOUT_SECONDS (also a TimeoutError)
        EnqueueOutcomeUnknown     the connection broke after an enqueue's commit may have reached the database
      ValidationError             bad argument to a public call (also a ValueError)
        UnknownTask               a job names a task nobody registered
        InvalidGraph              depends_on: a missing parent, a cycle, a self-dependency, too many parents
      DuplicateJob                unique-key conflict on enqueue
      JobNotFound
      InvalidTransition           job not in the status (or owner) the call expected
        WorkerDraining            the worker was asked to drain: it must claim no more
      TooManyStuckHandlers        Worker.run(): too many sync handlers ran on past their timeout
      JobFailed                   q.wait(): the job ended dead or cancelled
      WaitTimeout                 q.wait(): no result in time (also a TimeoutError)
      BackendUnavailable          an optional backend is configured but unreachable
        RedisUnavailable
        ContextStoreUnavailable
      SnapshotError               a snapshot cannot be taken, read or restored (pgq.snapshots)
        SnapshotNotFound          no snapshot has this id
        SnapshotCorrupt           a snapshot's body or file fails its checks (truncated, checksum, not a snapshot)
        SnapshotIncompatible      another format version, or a schema at another revision
        NoSnapshotBefore          a point in time before the first FULL snapshot

Handler outcome signals (``Retry``, ``Fatal``) are instructions, not failures,
so they do not inherit from ``PgqError``.
"""

from __future__ import annotations

from typing import Any


# Longest delay pgq accepts anywhere (enqueue delay, backoff cap, Retry(after)): a year.
MAX_DELAY_SECONDS = 366 * 24 * 3600.0


class PgqError(Exception):
    """Base class of every error pgq raises."""


class ConfigurationError(PgqError):
    """A setting is missing, malformed or inconsistent; the message names it."""


class SchemaNotReady(PgqError):
    """The database schema is not at the revision this pgq needs."""

    def __init__(self, current: str | None, needed: str, schema: str) -> None:
        self.current = current
        self.needed = needed
        self.schema = schema
        where = f"schema {schema!r} is at revision {current}" if current else (
            f"schema {schema!r} has no pgq tables (never migrated)"
        )
        super().__init__(f"{where}, pgq needs {needed}; run `pgq migrate`")


class DatabaseError(PgqError):
    """The database driver failed; the original exception is ``__cause__``."""


class DatabaseUnavailable(DatabaseError):
    """The database could not be reached within the time allowed (``wait_for_database``)."""


class StatementTimeout(DatabaseError, TimeoutError):
    """A statement ran longer than ``PGQ_STATEMENT_TIMEOUT_SECONDS``; its transaction was rolled back."""


class EnqueueOutcomeUnknown(DatabaseError):
    """The connection broke after an enqueue's commit may have reached the database.

    pgq retries an enqueue itself when that is safe: the failure came before the
    commit was sent, the database answered whether the transaction committed, or
    every job has a unique key. This error is what is left: the jobs may or may
    not exist. What is known is carried along:

    Attributes:
        job_ids: the ids the jobs have if they exist (known for ``enqueue_many``
            without unique keys, whose ids are drawn first), else None.
        transaction_id: the transaction that may have committed (``enqueue_many``),
            for ``SELECT pg_xact_status('<id>')`` once the database is reachable,
            else None.
        unique_keys: the jobs' unique keys, where they have one: enqueueing again
            with the same keys is then safe while the jobs are live.
    """

    def __init__(
        self,
        message: str,
        *,
        job_ids: list[int] | None = None,
        transaction_id: str | None = None,
        unique_keys: list[str | None] | None = None,
    ) -> None:
        self.job_ids = job_ids
        self.transaction_id = transaction_id
        self.unique_keys = unique_keys
        super().__init__(message)


class ValidationError(PgqError, ValueError):
    """An argument of a public call is invalid; nothing was written."""


class UnknownTask(ValidationError):
    """A job names a task that is not registered."""


class InvalidGraph(ValidationError):
    """A job graph cannot be enqueued (SQLSTATE ``PQ006``); nothing was written.

    A parent that does not exist (or is not committed yet), a cycle among the
    jobs of one ``enqueue_many`` call, a job depending on itself, more than
    ``MAX_PARENTS`` parents, or a ``pgq.ref()`` outside the call it refers to.
    """


class DuplicateJob(PgqError):
    """A live job already holds this unique key."""

    def __init__(self, unique_key: str, existing_job_id: int | None) -> None:
        self.unique_key = unique_key
        self.existing_job_id = existing_job_id
        super().__init__(
            f"unique_key {unique_key!r} is held by live job {existing_job_id}"
        )


class JobNotFound(PgqError):
    """No job has this id."""


class InvalidTransition(PgqError):
    """The job (or worker) is not in the status or owner the call expected."""


class WorkerDraining(InvalidTransition):
    """The worker was asked to drain (``pgq.drain_worker``): it may claim no more jobs.

    Raised by a claim (SQLSTATE ``PQ005``). Claiming again cannot succeed: the
    worker finishes or releases the jobs it holds and deregisters.
    """


class TooManyStuckHandlers(PgqError):
    """``Worker.run()`` stopped: ``limit`` sync handlers ran on past their job's timeout.

    Their jobs were failed (``timed_out``) and their threads replaced, but a
    thread cannot be killed; the worker drained and deregistered. The threads
    still running (``stuck``) end with the process: let it exit, and let a
    supervisor start a fresh one (``pgq worker`` exits with status 1).
    """

    def __init__(self, limit: int, stuck: int) -> None:
        self.limit = limit
        self.stuck = stuck
        super().__init__(f"{stuck} sync handler(s) still run past their job's timeout (limit max_stuck_handlers="
                         f"{limit}); the worker drained and stopped: restart the process")


class JobFailed(PgqError):
    """The awaited job ended dead or cancelled instead of completed."""

    def __init__(self, job_id: int, status: str, last_error: str | None) -> None:
        self.job_id = job_id
        self.status = status
        self.last_error = last_error
        detail = f": {last_error}" if last_error else ""
        super().__init__(f"job {job_id} ended {status}{detail}")


class WaitTimeout(PgqError, TimeoutError):
    """The awaited job did not finish in time."""


class BackendUnavailable(PgqError):
    """An optional backend is configured but cannot be reached."""


class RedisUnavailable(BackendUnavailable):
    """Redis is configured but cannot be reached."""


class ContextStoreUnavailable(BackendUnavailable):
    """The execution-context store is configured but cannot be reached."""


class ContextStoreMismatch(ConfigurationError):
    """The execution memory's collection was created with another vector size (or
    distance) than the embedder writes; the message names both."""


class Retry(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a handler: run the job again after ``after`` seconds.

    The attempt still counts; when no attempts are left the job is dead.
    """

    def __init__(self, after: float = 0.0, reason: str = "") -> None:
        if isinstance(after, bool) or not isinstance(after, (int, float)) or not 0 <= after <= MAX_DELAY_SECONDS:
            raise ValidationError(
                f"Retry(after=...) must be a number of seconds from 0 to {MAX_DELAY_SECONDS:.0f} (a year), got {after!r}"
            )
        self.after = float(after)
        self.reason = reason
        super().__init__(reason or f"retry after {after} s")


class Fatal(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a handler: do not retry, move the job to the dead letter queue."""

    def __init__(self, reason: str = "", **details: Any) -> None:
        self.reason = reason
        self.details = details
        super().__init__(reason)


class SnapshotError(PgqError):
    """A snapshot cannot be taken, read or restored; nothing was changed."""


class SnapshotNotFound(SnapshotError):
    """No snapshot has this id (in this database's schema)."""


class SnapshotCorrupt(SnapshotError):
    """A snapshot's body or file fails its checks: not a snapshot, truncated, or a checksum mismatch."""


class SnapshotIncompatible(SnapshotError):
    """The snapshot's format version or schema revision does not match what this pgq or database has."""


class NoSnapshotBefore(SnapshotError):
    """A point in time before the first FULL snapshot: there is nothing to restore from."""
