"""The statements of the optional Redis accelerator (``pgq.redis``).

Claims of ids popped from Redis, and the reads the reconciler and ``pgq
status`` compare the Redis data with. Postgres-only deployments never build
them; talking to Redis is ``pgq.redis``'s.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from pgq.db import execute, quote_ident
from pgq.operations import Op, Statement, operation
from pgq.job import Job, job_from_row
from pgq.queries.base import _JOB_SELECT


class MirrorQueries:
    """The statements of the optional Redis accelerator (``pgq.redis``), for one schema.

    Kept apart from ``Queries`` so that Postgres-only deployments never build
    them; both follow the same rules (bound parameters, schema quoted once).
    """

    def __init__(self, schema: str) -> None:
        s = quote_ident(schema)
        self._claim = f"SELECT {_JOB_SELECT} FROM {s}.claim_jobs(%s::bigint[], %s::uuid)"
        self._claim_v2 = f"SELECT {_JOB_SELECT} FROM {s}.claim_jobs_v2(%s::bigint[], %s::uuid, %s::bigint, %s::bigint)"
        self._horizon = f"SELECT {s}.mirror_horizon(), now()"
        self._now = "SELECT now()"
        self._after = (
            f"SELECT id, queue, priority, run_at FROM {s}.runnable_jobs_after("
            "%s::timestamptz, %s::bigint, now(), %s::int)"
        )
        # Paused queues' jobs are not offered (pgq.scheduling.pause), nor those of queues with
        # claim rules (pgq.scheduling.policy): the claim by id refuses both.
        offered = (
            f" AND NOT EXISTS (SELECT 1 FROM {s}.queue_pauses AS p WHERE p.queue = jobs.queue AND p.resumed_at IS NULL)"
            f" AND NOT EXISTS (SELECT 1 FROM {s}.queue_policies AS r WHERE r.queue = jobs.queue)"
        )
        self._runnable = (
            f"SELECT id, queue, greatest(priority, effective_priority) FROM {s}.jobs"
            " WHERE id = ANY (%s::bigint[]) AND status IN ('queued', 'retrying') AND run_at <= now()" + offered
        )
        self._live_workers = (
            f"SELECT id FROM {s}.workers WHERE id = ANY (%s::uuid[]) AND status IN ('active', 'draining')"
        )
        self._runnable_count = (
            f"SELECT queue, count(*) FROM {s}.jobs"
            " WHERE status IN ('queued', 'retrying') AND run_at <= now()" + offered +
            " GROUP BY queue"
        )

    def claim_jobs(self, conn: Any, job_ids: Sequence[int], worker_id: UUID) -> list[Job]:
        """Claim these ids for the worker (the ones still runnable); claim order."""
        return [job_from_row(r) for r in execute(conn, self._claim, [list(job_ids), worker_id])]

    def claim_jobs_v2(
        self, conn: Any, job_ids: Sequence[int], worker_id: UUID, position_base: int, started_through: int | None,
    ) -> list[Job]:
        """Claim these ids with claim positions (``claim_jobs_v2``, commits); claim order.

        As ``Queries.get_runnable_jobs_v2``: job ``i`` of the result has position
        ``position_base + 1 + i``, and the worker advances its base by
        ``len(job_ids)``.

        Raises:
            WorkerDraining: the worker was asked to drain: claim no more.
            InvalidTransition: the worker is stale (register again), stopped or unknown.
        """
        params = [list(job_ids), worker_id, position_base, started_through]
        return [job_from_row(r) for r in execute(conn, self._claim_v2, params)]

    def horizon(self, conn: Any) -> tuple[dt.datetime, dt.datetime]:
        """``(mirror_horizon(), now())``: the reconciler's next watermark and the database time."""
        row = execute(conn, self._horizon)[0]
        return row[0], row[1]

    def now(self, conn: Any) -> dt.datetime:
        """The database time (``pgq status``: its caller may not run ``mirror_horizon``)."""
        value: dt.datetime = execute(conn, self._now)[0][0]
        return value

    def runnable_after(
        self, conn: Any, after_run_at: dt.datetime | str, after_id: int, limit: int
    ) -> list[tuple[int, str, int, dt.datetime]]:
        """One page of ``runnable_jobs_after``: due runnable jobs after (run_at, id), in that order."""
        rows = execute(conn, self._after, [after_run_at, after_id, limit])
        return [(int(r[0]), str(r[1]), int(r[2]), r[3]) for r in rows]

    @operation
    def runnable_entries(self, job_ids: Sequence[int]) -> Op[list[tuple[int, str, int]]]:
        """``(id, queue, priority)`` of those ids that are runnable and due now, in queues not paused."""
        return [(int(r[0]), str(r[1]), int(r[2])) for r in (yield Statement(self._runnable, [list(job_ids)]))]

    def live_workers(self, conn: Any, worker_ids: Sequence[UUID]) -> set[UUID]:
        """Those of ``worker_ids`` that Postgres counts as alive (active or draining)."""
        return {r[0] for r in execute(conn, self._live_workers, [list(worker_ids)])}

    def runnable_counts(self, conn: Any) -> dict[str, int]:
        """Runnable, due jobs per queue, paused queues left out (for ``pgq status``: this scans the runnable set)."""
        return {str(r[0]): int(r[1]) for r in execute(conn, self._runnable_count)}
