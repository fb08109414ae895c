"""Leader-only housekeeping: mark stale workers (rescuing their jobs), fail
timed-out jobs, prune finished jobs past the retention period.

Any worker may call ``Maintenance.run_once()``; a transaction-scoped advisory
lock per schema makes exactly one of them do the work at a time. Everything
happens in one short transaction. The claim path is not touched here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from psycopg_pool import ConnectionPool

from pgq.db import translated
from pgq.queries import Queries, Rescue
from pgq.settings import Settings

log = logging.getLogger("pgq.maintenance")

PRUNE_BATCH = 10_000


@dataclass(frozen=True)
class MaintenanceReport:
    leader: bool
    stale: list[Rescue] = field(default_factory=list)
    timed_out: list[Rescue] = field(default_factory=list)
    pruned: int = 0

    @property
    def rescued_job_ids(self) -> list[int]:
        return [r.job_id for r in self.stale if r.job_id is not None]


class Maintenance:
    """Runs the housekeeping functions for one schema."""

    def __init__(self, settings: Settings, pool: ConnectionPool, queries: Queries | None = None) -> None:
        self.settings = settings
        self.pool = pool
        self.queries = queries or Queries(settings.schema)

    def run_once(self, conn: Any = None) -> MaintenanceReport:
        """One round of maintenance, if this caller wins the leader lock (commits)."""
        with translated(self.settings.database_url):
            if conn is not None:
                return self._round(conn)
            with self.pool.connection() as pooled:
                return self._round(pooled)

    def _round(self, conn: Any) -> MaintenanceReport:
        with conn.transaction():
            if not self.queries.try_lead(conn):
                return MaintenanceReport(leader=False)
            stale = self.queries.mark_stale_workers(conn, self.settings.stale_after_seconds)
            # Workers enforce timeouts themselves; the database steps in only
            # after a heartbeat interval of grace (a stuck worker).
            timed_out = self.queries.fail_timed_out_jobs(conn, self.settings.heartbeat_interval_seconds)
            pruned = self.queries.prune_jobs(conn, self.settings.job_retention_seconds, PRUNE_BATCH)
        report = MaintenanceReport(True, stale, timed_out, pruned)
        if stale or timed_out:
            log.warning(
                "maintenance: %d stale worker row(s), %d job(s) rescued, %d timed out",
                len({r.worker_id for r in stale}), len(report.rescued_job_ids), len(timed_out),
            )
        return report
