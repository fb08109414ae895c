"""Statements that inspect and control jobs from outside a worker.

Read a job or its outcome; cancel; the dead letter queue (list, count,
requeue, purge); the status views behind ``pgq status`` and ``pgq workers``;
ask a worker to drain, or evacuate it; the schema's migration revision. Validating the
arguments is ``pgq.queue``'s, formatting the figures ``pgq.stats``'.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from pgq.db import execute, quote_ident
from pgq.job import Job, job_from_row
from pgq.operations import Op, Statement, operation
from pgq.queries.base import _JOB_SELECT, QueriesBase


# The most jobs one purge_dead_jobs() call deletes (db/functions/purge_dead_jobs/002.sql).
PURGE_BATCH = 10_000


@dataclass(frozen=True)
class DeadLetter:
    """An open entry of the dead letter queue."""

    job_id: int
    queue: str
    task: str
    reason: str
    last_error: str | None
    attempts: int
    moved_at: dt.datetime
    error_history: list[dict[str, Any]]


class ControlQueries(QueriesBase):
    """The statements that inspect and control jobs, for one pgq schema."""

    def __init__(self, schema: str) -> None:
        super().__init__(schema)
        s = quote_ident(schema)
        self._get = f"SELECT {_JOB_SELECT} FROM {s}.jobs WHERE id = %s::bigint"
        self._status = f"SELECT status, result, last_error FROM {s}.jobs WHERE id = %s::bigint"
        self._statuses = f"SELECT id, status, result, last_error FROM {s}.jobs WHERE id = ANY(%s::bigint[])"
        self._dead_letters = (
            f"SELECT d.job_id, d.queue, d.task, d.reason, d.last_error, j.attempts, d.moved_at, d.error_history"
            f" FROM {s}.dead_letter_queue AS d JOIN {s}.jobs AS j ON j.id = d.job_id"
            " WHERE d.requeued_at IS NULL AND (%s::text IS NULL OR d.queue = %s::text)"
            " ORDER BY d.moved_at, d.id LIMIT %s::int"
        )
        self._dlq_size = f"SELECT count(*) FROM {s}.dead_letter_queue WHERE requeued_at IS NULL"
        self._queue_stats = (
            f"SELECT queue, status::text, priority, jobs, due, extract(epoch FROM oldest_due_age)"
            f" FROM {s}.queue_stats ORDER BY queue, status, priority DESC"
        )
        self._status_estimates = f"SELECT status::text, jobs FROM {s}.job_status_estimates"
        self._workers = (
            f"SELECT id, hostname, pid, status::text, queues, capacity, current_load, running_jobs,"
            f" health_score, extract(epoch FROM heartbeat_age), started_at, stuck_handlers"
            f" FROM {s}.worker_status ORDER BY status, started_at"
        )
        self._cancel = f"SELECT {s}.cancel_job(%s::bigint)"
        self._requeue = f"SELECT * FROM {s}.requeue_dead_jobs(%s::bigint[], %s::text)"
        self._purge = f"SELECT * FROM {s}.purge_dead_jobs(%s::bigint[], make_interval(secs => %s::float8))"
        self._drain = f"SELECT {s}.drain_worker(%s::uuid)"
        self._evacuate = f"SELECT {s}.evacuate_worker(%s::uuid, %s::text, %s::text)"
        # An evacuation of the worker's current life (see evacuate_worker).
        self._evacuation = (
            f"SELECT evacuation_reason FROM {s}.workers WHERE id = %s::uuid AND evacuated_at >= drain_requested_at"
        )
        # A worker's latest samples in which jobs finished (the ones its own rule counted) against
        # the samples of the other live workers sharing a queue with it over the same span (at
        # least the last few intervals; only samples in which jobs finished: an idle peer says
        # nothing); pgq.health.evacuation.PeerWindow reads the row.
        self._peer_window = (
            f"WITH peers AS (SELECT id FROM {s}.workers WHERE status = 'active' AND id <> %s::uuid"
            "  AND queues && %s::text[]),"
            " own AS (SELECT l.logged_at - make_interval(secs => coalesce(l.interval_seconds, 0)) AS since,"
            "  l.jobs_completed AS done, l.jobs_failed AS bad, l.latency_p50_ms AS p50"
            f"  FROM {s}.worker_health_logs AS l WHERE l.worker_id = %s::uuid"
            "  AND l.metric_type = 'heartbeat' AND coalesce(l.jobs_completed, 0) + coalesce(l.jobs_failed, 0) > 0"
            "  ORDER BY l.logged_at DESC, l.id DESC LIMIT %s),"
            " span AS (SELECT least(min(since), now() - make_interval(secs => %s)) AS since FROM own),"
            " theirs AS (SELECT l.jobs_completed AS done, l.jobs_failed AS bad, l.latency_p50_ms AS p50,"
            f"  l.health_score AS score FROM {s}.worker_health_logs AS l, span"
            "  WHERE l.worker_id IN (SELECT id FROM peers) AND l.metric_type = 'heartbeat'"
            "  AND l.logged_at > coalesce(span.since, now() - make_interval(secs => %s))"
            "  AND coalesce(l.jobs_completed, 0) + coalesce(l.jobs_failed, 0) > 0)"
            " SELECT (SELECT coalesce(sum(done), 0) FROM own), (SELECT coalesce(sum(bad), 0) FROM own),"
            "  (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY p50) FROM own),"
            "  (SELECT count(*) FROM peers), coalesce(sum(done), 0), coalesce(sum(bad), 0),"
            "  percentile_cont(0.5) WITHIN GROUP (ORDER BY p50), percentile_cont(0.5) WITHIN GROUP (ORDER BY score)"
            " FROM theirs"
        )
        # Of some jobs, those that failed (or timed out) on another worker than this one.
        self._failed_elsewhere = (
            f"SELECT count(DISTINCT job_id) FROM {s}.job_executions WHERE job_id = ANY(%s::bigint[])"
            " AND worker_id IS DISTINCT FROM %s::uuid AND outcome IN ('failed', 'timed_out')"
        )
        self._revision = f"SELECT version_num FROM {s}.alembic_version"
        self._revision_exists = "SELECT to_regclass(%s) IS NOT NULL"

    @operation
    def get_job(self, job_id: int) -> Op[Job | None]:
        rows = yield Statement(self._get, [job_id])
        return job_from_row(rows[0]) if rows else None

    @operation
    def job_outcome(self, job_id: int) -> Op[tuple[str, Any, str | None] | None]:
        rows = yield Statement(self._status, [job_id])
        return (str(rows[0][0]), rows[0][1], rows[0][2]) if rows else None

    @operation
    def job_outcomes(self, job_ids: Sequence[int]) -> Op[dict[int, tuple[str, Any, str | None]]]:
        """``job_outcome`` of several jobs in one statement (ids that do not exist are left out)."""
        rows = yield Statement(self._statuses, [list(job_ids)])
        return {int(r[0]): (str(r[1]), r[2], r[3]) for r in rows}

    @operation
    def dead_letters(self, queue: str | None, limit: int) -> Op[list[DeadLetter]]:
        rows = yield Statement(self._dead_letters, [queue, queue, limit])
        return [DeadLetter(int(r[0]), r[1], r[2], r[3], r[4], int(r[5]), r[6], list(r[7])) for r in rows]

    def dead_letter_count(self, conn: Any) -> int:
        return int(execute(conn, self._dlq_size)[0][0])

    def queue_stats(self, conn: Any) -> list[tuple[Any, ...]]:
        return execute(conn, self._queue_stats)

    def status_estimates(self, conn: Any) -> dict[str, int]:
        """Estimated jobs per status from the table statistics (``job_status_estimates``)."""
        return {str(r[0]): int(r[1]) for r in execute(conn, self._status_estimates)}

    def workers(self, conn: Any) -> list[tuple[Any, ...]]:
        return execute(conn, self._workers)

    @operation
    def schema_revision(self) -> Op[str | None]:
        """The Alembic revision of the schema, or None when it was never migrated."""
        if not (yield Statement(self._revision_exists, [f"{quote_ident(self.schema)}.alembic_version"]))[0][0]:
            return None
        rows = yield Statement(self._revision)
        return str(rows[0][0]) if rows else None

    @operation
    def cancel_job(self, job_id: int) -> Op[bool]:
        return bool((yield Statement(self._cancel, [job_id]))[0][0])

    @operation
    def requeue_dead_jobs(self, job_ids: Sequence[int] | None, queue: str | None) -> Op[list[int]]:
        ids = None if job_ids is None else list(job_ids)
        return [int(r[0]) for r in (yield Statement(self._requeue, [ids, queue]))]

    @operation
    def purge_dead_jobs(self, job_ids: Sequence[int] | None, older_than_seconds: float) -> Op[list[int]]:
        """One bounded batch: at most ``PURGE_BATCH`` dead jobs purged (call again while it returns that many)."""
        ids = None if job_ids is None else list(job_ids)
        return [int(r[0]) for r in (yield Statement(self._purge, [ids, older_than_seconds]))]

    def drain_worker(self, conn: Any, worker_id: UUID) -> bool:
        """Ask a worker to drain (``drain_worker``, commits): active -> draining.

        Returns:
            True when this call asked for it, False when it was already draining.

        Raises:
            InvalidTransition: the worker is stopped or unknown.
        """
        return bool(execute(conn, self._drain, [worker_id])[0][0])

    def evacuate_worker(self, conn: Any, worker_id: UUID, reason: str, source: str) -> bool:
        """Evacuate a worker (``evacuate_worker``, commits): active -> draining, with the reason.

        Args:
            source: ``worker`` (it evacuates itself) or ``operator``.

        Returns:
            True when this call evacuated it, False when it already was.

        Raises:
            ValidationError: a blank or too long reason, an unknown source.
            InvalidTransition: the worker is stopped or unknown.
        """
        return bool(execute(conn, self._evacuate, [worker_id, reason, source])[0][0])

    def evacuation_reason(self, conn: Any, worker_id: UUID) -> str | None:
        """Why the worker was evacuated (in its current life), or None when it was not."""
        rows = execute(conn, self._evacuation, [worker_id])
        return str(rows[0][0]) if rows else None

    def peer_window(self, conn: Any, worker_id: UUID, queues: Sequence[str], samples: int, window_seconds: float,
                    failed_job_ids: Sequence[int]) -> tuple[Any, ...]:
        """The figures of ``pgq.health.evacuation.PeerWindow``, in its field order: this worker's
        latest ``samples`` samples in which jobs finished, and its live peers' samples over the
        span they cover (at least the last ``window_seconds``, database time), then how many of
        ``failed_job_ids`` failed on another worker too."""
        row = execute(conn, self._peer_window, [worker_id, list(queues), worker_id, samples,
                                                window_seconds, window_seconds])[0]
        elsewhere = execute(conn, self._failed_elsewhere, [list(failed_job_ids), worker_id])[0][0] \
            if failed_job_ids else 0
        return (*row, len(failed_job_ids), int(elsewhere))
