"""Stuck handlers, counted in the database.

A sync handler that runs past its job's timeout cannot be stopped: the runner
replaces its thread and counts it as stuck until it returns (``Runner.stuck``).
``StuckReport.run_once()`` writes that count to ``workers.stuck_handlers``
(``pgq.set_worker_stuck_handlers``) when it changed; the worker runs it right
after each heartbeat (``WithStuckReport``) and once more before it
deregisters, so ``pgq workers`` and ``worker_status`` show it within a
heartbeat interval. Nothing is written while the count stays the same.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from pgq.queries import Queries


class _Counts(Protocol):
    @property
    def stuck(self) -> int: ...


class _Service(Protocol):
    def run_once(self) -> Any: ...


class StuckReport:
    """Writes a worker's count of stuck handlers when it changed (``run_once``)."""

    def __init__(self, pool: Callable[[], ConnectionPool], queries: Queries, worker_id: uuid.UUID,
                 runner: _Counts) -> None:
        self.pool = pool
        self.queries = queries
        self.worker_id = worker_id
        self.runner = runner
        self.sent = 0  # the count the database has (a new worker row starts at 0)

    def run_once(self) -> int | None:
        """Write the count if it changed; return it (None: nothing to write). Raises what
        the database raises (the count is sent again next time)."""
        stuck = self.runner.stuck
        if stuck == self.sent:
            return None
        with self.pool().connection() as conn:
            self.queries.set_worker_stuck_handlers(conn, self.worker_id, stuck)
        self.sent = stuck
        return stuck


class WithStuckReport:
    """The heartbeat, then the stuck report: one service for the background thread."""

    def __init__(self, heartbeat: _Service, report: StuckReport) -> None:
        self.heartbeat = heartbeat
        self.report = report

    def run_once(self) -> Any:
        beat = self.heartbeat.run_once()
        self.report.run_once()
        return beat
