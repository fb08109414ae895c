"""A worker's statements: its row (register, heartbeat, deregister), claims, outcomes.

Everything a running worker sends about itself and its jobs, plus the names
of the channels it listens on. What to claim, when, and what an answer means
for the jobs in hand is decided in ``pgq.worker``; the transitions themselves
are the stored functions'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from pgq.db import execute, int_array, quote_ident
from pgq.job import Job, job_from_row
from pgq.queries.base import _JOB_SELECT, QueriesBase


@dataclass(frozen=True)
class Heartbeat:
    """The answer to a heartbeat.

    ``previous_status``: the worker's status before it ('stale': its jobs were
    rescued meanwhile). ``lost_job_ids``: of the jobs it listed, those it no
    longer owns (cancelled, rescued, timed out): stop them. From
    ``heartbeat_worker_v2`` only: ``status``, its status now ('active' or
    'draining': claim no more, finish or release, deregister), and
    ``rescued_job_ids``, owned jobs it did not list, rescued now as ClaimLost.
    """

    previous_status: str
    lost_job_ids: list[int]
    status: str | None = None
    rescued_job_ids: list[int] = field(default_factory=list)


class WorkerQueries(QueriesBase):
    """A worker's statements for one pgq schema."""

    def __init__(self, schema: str) -> None:
        super().__init__(schema)
        s = quote_ident(schema)
        self.channel_job_available = f"{schema}_job_available"
        self.channel_job_cancelled = f"{schema}_job_cancelled"
        # drain_worker() notifies here, payload: the worker id.
        self.channel_worker_draining = f"{schema}_worker_draining"
        self._register = f"SELECT {s}.register_worker(%s::uuid, %s::text, %s::int, %s::text[], %s::int, %s::jsonb)"
        self._heartbeat = (
            f"SELECT previous_status, lost_job_ids FROM {s}.heartbeat_worker(%s::uuid, %s::int, %s::bigint[], %s::real)"
        )
        self._heartbeat_v2 = (
            f"SELECT status, previous_status, lost_job_ids, rescued_job_ids"
            f" FROM {s}.heartbeat_worker_v2(%s::uuid, %s::int, %s::bigint[], %s::bigint, %s::real)"
        )
        self._deregister = f"SELECT {s}.deregister_worker(%s::uuid)"
        self._stuck = f"SELECT {s}.set_worker_stuck_handlers(%s::uuid, %s::int)"
        self._claim = f"SELECT {_JOB_SELECT} FROM {s}.get_runnable_jobs(%s::text[], %s::uuid, %s::int)"
        self._claim_v2 = (
            f"SELECT {_JOB_SELECT} FROM {s}.get_runnable_jobs_v2(%s::text[], %s::uuid, %s::int, %s::bigint, %s::bigint)"
        )
        # Seconds until the next scheduled (delayed or retrying) job of these
        # queues is due: one index probe per queue and (effective) priority on the claim index.
        self._next_due = (
            f"SELECT extract(epoch FROM min(n.run_at) - now())"
            f" FROM unnest(%s::text[]) AS q(queue), generate_series(1, 5) AS p(priority),"
            f" LATERAL (SELECT run_at FROM {s}.jobs AS j"
            "           WHERE j.queue = q.queue AND greatest(j.priority, j.effective_priority) = p.priority"
            "             AND j.status IN ('queued', 'retrying') AND j.run_at > now()"
            "           ORDER BY j.run_at LIMIT 1) AS n"
        )
        # Seconds until the earliest queued or retrying job of these queues is due
        # (<= 0: one is due now): what a burst run waits for. Same probes as above.
        # A waiting job of these queues whose parent is still queued, running or retrying
        # will be released when the parent completes: it counts as due in a second (a
        # burst run waits for it rather than exit while the parent runs elsewhere).
        self._due = (
            f"SELECT extract(epoch FROM least(min(n.run_at), (SELECT now() + interval '1 second'"
            f"   WHERE EXISTS (SELECT 1 FROM {s}.jobs AS w JOIN {s}.job_dependencies AS d ON d.child_id = w.id"
            f"                 JOIN {s}.jobs AS pj ON pj.id = d.parent_id"
            "                  WHERE w.queue = ANY (%s::text[]) AND w.status = 'waiting'"
            "                    AND pj.status IN ('queued', 'running', 'retrying')))) - now())"
            f" FROM unnest(%s::text[]) AS q(queue), generate_series(1, 5) AS p(priority),"
            f" LATERAL (SELECT run_at FROM {s}.jobs AS j"
            "           WHERE j.queue = q.queue AND greatest(j.priority, j.effective_priority) = p.priority"
            "             AND j.status IN ('queued', 'retrying')"
            "           ORDER BY j.run_at LIMIT 1) AS n"
        )
        self._complete = f"SELECT * FROM {s}.complete_jobs(%s::uuid, %s::bigint[], %s::int[], %s::text[]::jsonb[])"
        self._fail = (
            f"SELECT {s}.fail_job(%s::bigint, %s::uuid, %s::int, %s::text, %s::text, %s::text,"
            f" %s::float8, %s::boolean, %s::{s}.attempt_outcome)"
        )
        self._release = f"SELECT * FROM {s}.release_jobs(%s::uuid, %s::bigint[], %s::int[])"

    def register_worker(
        self, conn: Any, worker_id: UUID, hostname: str, pid: int, queues: Sequence[str], capacity: int,
        metadata_json: str,
    ) -> None:
        execute(conn, self._register, [worker_id, hostname, pid, list(queues), capacity, metadata_json])

    def heartbeat_worker(
        self, conn: Any, worker_id: UUID, load: int, running: Sequence[int], health_score: float | None = None
    ) -> Heartbeat:
        row = execute(conn, self._heartbeat, [worker_id, load, list(running), health_score])[0]
        return Heartbeat(str(row[0]), [int(i) for i in row[1]])

    def heartbeat_worker_v2(
        self, conn: Any, worker_id: UUID, load: int, running: Sequence[int], started_through: int | None,
        health_score: float | None = None,
    ) -> Heartbeat:
        """Send a heartbeat with the worker's watermark (``heartbeat_worker_v2``, commits).

        Args:
            running: every job the worker holds and has not finished reporting
                (prefetched, running, or finished with its outcome not committed
                yet); an owned job claimed more than 10 s ago and not listed is
                rescued as ClaimLost (``rescued_job_ids``).
            started_through: the worker's watermark P: every job it received with
                a claim position <= P has started (or was finished or released).
                Never lowered; None keeps the stored one.

        Returns:
            A ``Heartbeat`` with every field set.

        Raises:
            InvalidTransition: the worker is stopped or unknown.
            ValidationError: ``started_through`` is negative.
        """
        row = execute(conn, self._heartbeat_v2, [worker_id, load, list(running), started_through, health_score])[0]
        return Heartbeat(str(row[1]), [int(i) for i in row[2]], str(row[0]), [int(i) for i in row[3]])

    def set_worker_stuck_handlers(self, conn: Any, worker_id: UUID, stuck: int) -> None:
        """Record how many of the worker's sync handlers run on past their timeout (commits).

        Raises ``InvalidTransition`` for an unknown worker, ``ValidationError`` for a negative count.
        """
        execute(conn, self._stuck, [worker_id, stuck])

    def deregister_worker(self, conn: Any, worker_id: UUID) -> int:
        return int(execute(conn, self._deregister, [worker_id])[0][0])

    def get_runnable_jobs(self, conn: Any, queues: Sequence[str], worker_id: UUID, max_jobs: int) -> list[Job]:
        """Claim up to ``max_jobs`` jobs; their attempts count from the claim on (commits).

        Raises:
            WorkerDraining: the worker was asked to drain: claim no more.
            InvalidTransition: the worker is stale (register again), stopped or unknown.
        """
        return [job_from_row(r) for r in execute(conn, self._claim, [list(queues), worker_id, max_jobs])]

    def get_runnable_jobs_v2(
        self, conn: Any, queues: Sequence[str], worker_id: UUID, max_jobs: int, position_base: int,
        started_through: int | None,
    ) -> list[Job]:
        """Claim up to ``max_jobs`` jobs with claim positions (``get_runnable_jobs_v2``, commits).

        Job ``i`` of the result (claim order) has claim position
        ``position_base + 1 + i``. A worker passes as ``position_base`` the
        number of jobs it asked for before (the sum of its earlier
        ``max_jobs`` and ``claim_jobs_v2`` id counts), and as ``started_through``
        its watermark: every job it received with a position up to it has
        started (or was finished or released). A rescue after a crash gives
        back the attempts of the jobs above the watermark. With jobs claimed,
        a watermark costs an update of the worker's row instead of a share
        lock; None keeps the stored one (it then lags until the heartbeat).

        Raises:
            WorkerDraining: the worker was asked to drain: claim no more.
            InvalidTransition: the worker is stale (register again), stopped or unknown.
            ValidationError: a negative position or watermark, no queue, ``max_jobs`` < 1.
        """
        params = [list(queues), worker_id, max_jobs, position_base, started_through]
        return [job_from_row(r) for r in execute(conn, self._claim_v2, params)]

    def seconds_until_next_due(self, conn: Any, queues: Sequence[str]) -> float | None:
        """Seconds until the next not-yet-due job of ``queues`` is due (None if there is none)."""
        value = execute(conn, self._next_due, [list(queues)])[0][0]
        return None if value is None else max(0.0, float(value))

    def seconds_until_due(self, conn: Any, queues: Sequence[str]) -> float | None:
        """Seconds until the earliest queued or retrying job of ``queues`` is due: 0 when
        one is due now, None when there is none (delayed jobs and retries included). A
        waiting job whose parent is still live counts as due in a second."""
        value = execute(conn, self._due, [list(queues), list(queues)])[0][0]
        return None if value is None else max(0.0, float(value))

    def complete_jobs(
        self, conn: Any, worker_id: UUID, job_ids: Sequence[int], attempts: Sequence[int],
        results_json: Sequence[str | None],
    ) -> set[int]:
        # Results are mostly None (handlers that return nothing): then send no array at all.
        results = None if all(r is None for r in results_json) else list(results_json)
        rows = execute(conn, self._complete, [worker_id, int_array(job_ids), int_array(attempts), results])
        return {int(r[0]) for r in rows}

    def fail_job(
        self, conn: Any, job_id: int, worker_id: UUID, attempt: int, error_type: str, message: str,
        traceback: str | None, retry_delay: float | None, fatal: bool, outcome: str,
    ) -> bool:
        params = [job_id, worker_id, attempt, error_type, message, traceback, retry_delay, fatal, outcome]
        return bool(execute(conn, self._fail, params)[0][0])

    def release_jobs(self, conn: Any, worker_id: UUID, job_ids: Sequence[int], attempts: Sequence[int]) -> set[int]:
        return {int(r[0]) for r in execute(conn, self._release, [worker_id, int_array(job_ids), int_array(attempts)])}
