"""The maintenance leader's statements: leadership, rescues and pruning.

Take this schema's maintenance lock, bound an idle transaction, rescue the
jobs of stale workers and timed-out jobs, prune finished jobs and stopped
workers. When to run each one, and what to log, is ``pgq.maintenance``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from pgq.db import execute, quote_ident
from pgq.queries.base import QueriesBase


@dataclass(frozen=True)
class Rescue:
    """One row of mark_stale_workers / fail_timed_out_jobs."""

    worker_id: UUID | None
    job_id: int | None
    status: str | None


class MaintenanceQueries(QueriesBase):
    """The maintenance leader's statements for one pgq schema."""

    def __init__(self, schema: str) -> None:
        super().__init__(schema)
        s = quote_ident(schema)
        self._stale = f"SELECT worker_id, job_id, job_status FROM {s}.mark_stale_workers(make_interval(secs => %s::float8))"
        self._timed_out = f"SELECT worker_id, job_id, job_status FROM {s}.fail_timed_out_jobs(make_interval(secs => %s::float8))"
        self._prune = f"SELECT {s}.prune_jobs(make_interval(secs => %s::float8), %s::int)"
        # One batch of pruning, by the maintenance leader only: the lock is taken
        # again for this transaction (NULL when another worker leads meanwhile).
        self._prune_if_leader = (
            f"SELECT CASE WHEN pg_try_advisory_xact_lock(hashtext(%s))"
            f" THEN {s}.prune_jobs(make_interval(secs => %s::float8), %s::int) END"
        )
        # One batch of purging dead jobs, the same way (count of the ids purge_dead_jobs returns).
        self._purge_dead_if_leader = (
            f"SELECT CASE WHEN pg_try_advisory_xact_lock(hashtext(%s))"
            f" THEN (SELECT count(*) FROM {s}.purge_dead_jobs(NULL, make_interval(secs => %s::float8))) END"
        )
        self._prune_workers = f"SELECT {s}.prune_workers(make_interval(secs => %s::float8), %s::int)"
        # One leader per database and schema for maintenance (SPEC §12: only
        # per-database advisory locks, no global singleton).
        self._leader = "SELECT pg_try_advisory_xact_lock(hashtext(%s))"
        # SET LOCAL, with a bound parameter: the server ends this session if it idles
        # inside the current transaction for longer than this many milliseconds.
        self._idle_limit = "SELECT set_config('idle_in_transaction_session_timeout', %s, true)"

    def limit_idle_in_transaction(self, conn: Any, seconds: float) -> None:
        """End this session if it idles inside the current transaction for ``seconds`` (SET LOCAL)."""
        execute(conn, self._idle_limit, [str(max(1, round(seconds * 1000)))])

    def try_lead(self, conn: Any) -> bool:
        """Take this schema's maintenance lock for the current transaction, if free."""
        return bool(execute(conn, self._leader, [f"pgq-maintenance:{self.schema}"])[0][0])

    def mark_stale_workers(self, conn: Any, stale_after_seconds: float) -> list[Rescue]:
        return [Rescue(r[0], r[1], r[2]) for r in execute(conn, self._stale, [stale_after_seconds])]

    def fail_timed_out_jobs(self, conn: Any, grace_seconds: float) -> list[Rescue]:
        return [Rescue(r[0], r[1], r[2]) for r in execute(conn, self._timed_out, [grace_seconds])]

    def prune_jobs(self, conn: Any, older_than_seconds: float, limit: int) -> int:
        return int(execute(conn, self._prune, [older_than_seconds, limit])[0][0])

    def prune_jobs_if_leader(self, conn: Any, older_than_seconds: float, limit: int) -> int | None:
        """One batch of ``prune_jobs`` if this transaction gets the maintenance lock, else None."""
        value = execute(conn, self._prune_if_leader,
                        [f"pgq-maintenance:{self.schema}", older_than_seconds, limit])[0][0]
        return None if value is None else int(value)

    def purge_dead_jobs_if_leader(self, conn: Any, older_than_seconds: float) -> int | None:
        """One batch of ``purge_dead_jobs`` (at most ``PURGE_BATCH`` jobs) if this transaction
        gets the maintenance lock, else None."""
        value = execute(conn, self._purge_dead_if_leader, [f"pgq-maintenance:{self.schema}", older_than_seconds])[0][0]
        return None if value is None else int(value)

    def prune_workers(self, conn: Any, older_than_seconds: float, limit: int) -> int:
        return int(execute(conn, self._prune_workers, [older_than_seconds, limit])[0][0])
