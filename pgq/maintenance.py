"""Leader-only housekeeping: mark stale workers (rescuing their jobs), fail
timed-out jobs, prune finished jobs past the retention period.

Any worker may call ``Maintenance.run_once()``; a transaction-scoped advisory
lock per schema makes exactly one of them do the work at a time. Everything
happens in one short transaction. The claim path is not touched here.
With Redis configured, the leader also reconciles the Redis mirror after its
round (``reconcile_mirror``; the reconciler itself lives in ``pgq.redis.reconciler``),
so that rescued jobs reach Redis at once.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from psycopg_pool import ConnectionPool

from pgq.db import translated
from pgq.queries import Queries, Rescue
from pgq.settings import Settings

if TYPE_CHECKING:
    from pgq.redis.client import RedisClient
    from pgq.redis.reconciler import ReconcileReport, Reconciler

log = logging.getLogger("pgq.maintenance")

PRUNE_BATCH = 10_000


@dataclass(frozen=True)
class MaintenanceReport:
    leader: bool
    stale: list[Rescue] = field(default_factory=list)
    timed_out: list[Rescue] = field(default_factory=list)
    pruned: int = 0
    # The reconciler pass that followed (Redis mode only; None if Redis was unavailable).
    reconciled: ReconcileReport | None = None

    @property
    def rescued_job_ids(self) -> list[int]:
        return [r.job_id for r in self.stale if r.job_id is not None]


class Maintenance:
    """Runs the housekeeping functions for one schema."""

    def __init__(
        self, settings: Settings, pool: ConnectionPool, queries: Queries | None = None,
        redis: RedisClient | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.queries = queries or Queries(settings.schema)
        # Redis mode: the reconciler (on the ``redis`` client, or a client of its own).
        self.reconciler: Reconciler | None = None
        if settings.redis_url is not None:
            from pgq.redis.client import RedisClient
            from pgq.redis.reconciler import Reconciler

            self.reconciler = Reconciler(settings, pool, redis or RedisClient(settings))

    def reconcile_mirror(self, *, quick: bool = False) -> ReconcileReport | None:
        """One pass of the Redis mirror reconciler (None without Redis, or when Redis is unavailable)."""
        if self.reconciler is None:
            return None
        from pgq.errors import RedisUnavailable

        try:
            return self.reconciler.run_once(quick=quick)
        except RedisUnavailable as exc:
            log.debug("mirror not reconciled: %s", exc)
            return None

    def run_once(self, conn: Any = None) -> MaintenanceReport:
        """One round of maintenance, if this caller wins the leader lock (commits)."""
        with translated(self.settings.database_url):
            if conn is not None:
                report = self._round(conn)
            else:
                with self.pool.connection() as pooled:
                    report = self._round(pooled)
        if report.leader and self.reconciler is not None:
            # After the round's commit, on a connection of its own: rescued jobs reach Redis now.
            report = dataclasses.replace(report, reconciled=self.reconcile_mirror())
        return report

    def _round(self, conn: Any) -> MaintenanceReport:
        with conn.transaction():
            # A leader that stalls inside this transaction (SIGSTOP, a frozen VM, a
            # debugger) would hold the lock, and so every worker's maintenance, for as
            # long as it stalls: the server ends the session after a heartbeat interval
            # of silence instead, and another worker takes the lead.
            self.queries.limit_idle_in_transaction(conn, self.settings.heartbeat_interval_seconds)
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
