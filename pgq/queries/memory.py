"""The execution memory's reads (issue 12; ``pgq.memory``): rows only, read only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pgq.db import execute, quote_ident


class MemoryQueries:
    """The execution memory's reads (``pgq.memory``), for one schema: rows only, read only.

    The memory never changes a job; a cluster's requeue goes through ``requeue_dead_jobs``.
    """

    def __init__(self, schema: str) -> None:
        s = quote_ident(schema)
        # The attempt to search from: the newest failed one, else the newest.
        self._attempt = (
            "SELECT e.job_id, e.attempt, j.queue, j.task, e.outcome::text, extract(epoch FROM e.finished_at)::float8,"
            " coalesce(e.error_type, ''), coalesce(e.error_message, ''), e.traceback, e.duration_ms, e.worker_id::text,"
            f" j.payload FROM {s}.job_executions e JOIN {s}.jobs j ON j.id = e.job_id WHERE e.job_id = %s::bigint"
            " ORDER BY (e.outcome = 'completed'), e.finished_at DESC, e.id DESC LIMIT 1"
        )
        self._fates = (
            "SELECT j.id, j.status::text,"
            f" EXISTS (SELECT 1 FROM {s}.job_executions e WHERE e.job_id = j.id AND e.outcome = 'completed'),"
            f" EXISTS (SELECT 1 FROM {s}.dead_letter_queue d WHERE d.job_id = j.id AND d.requeued_at IS NOT NULL)"
            f" FROM {s}.jobs j WHERE j.id = ANY(%s::bigint[])"
        )
        # The final attempt of each open dead letter (LATERAL: one index probe per job).
        self._dead = (
            "SELECT d.job_id, d.queue, d.task, d.moved_at, coalesce(e.attempt, 0), coalesce(e.outcome::text, 'failed'),"
            " coalesce(e.error_type, ''), coalesce(e.error_message, d.last_error, ''), e.traceback"
            f" FROM {s}.dead_letter_queue d LEFT JOIN LATERAL (SELECT attempt, outcome, error_type, error_message,"
            f" traceback FROM {s}.job_executions x WHERE x.job_id = d.job_id ORDER BY x.id DESC LIMIT 1) e ON true"
            " WHERE d.requeued_at IS NULL AND (%s::text IS NULL OR d.queue = %s::text)"
            " ORDER BY d.moved_at, d.id LIMIT %s::int"
        )

    def attempt(self, conn: Any, job_id: int) -> tuple[Any, ...] | None:
        """``job_id``'s newest failed attempt (else newest): job_id, attempt, queue, task, outcome,
        finished_at (epoch seconds), error_type, message, traceback, duration_ms, worker_id, payload."""
        rows = execute(conn, self._attempt, [job_id])
        return rows[0] if rows else None

    def fates(self, conn: Any, job_ids: Sequence[int]) -> list[tuple[Any, ...]]:
        """(job id, status, any attempt completed, requeued from the DLQ) of those jobs that still exist."""
        return execute(conn, self._fates, [list(job_ids)])

    def dead_jobs(self, conn: Any, queue: str | None, limit: int) -> list[tuple[Any, ...]]:
        """Open dead letters, oldest first: job_id, queue, task, moved_at, and the final attempt's
        attempt, outcome, error_type, message, traceback."""
        return execute(conn, self._dead, [queue, queue, limit])
