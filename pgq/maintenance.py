"""Leader-only housekeeping: mark stale workers (rescuing their jobs), fail
timed-out jobs, delete the rows of workers long gone, prune finished jobs past
the retention period, and worker health samples past theirs (``pgq.health.retention``);
enqueue the due ticks of periodic schedules (``pgq.scheduling.cron.CronService``).

Any worker may call ``Maintenance.run_once()``; a transaction-scoped advisory
lock per schema makes exactly one of them do the work at a time. The round is
one short transaction; pruning follows it in batches of
``prune_batch_size`` jobs, each its own transaction that takes the lock again,
until nothing is left to prune or ``prune_time_budget_seconds`` is spent (what
is left waits for the next round, and the report says so). The claim path is
not touched here.
With AUTO snapshots configured (``PGQ_SNAPSHOT_INTERVAL_SECONDS`` or
``PGQ_SNAPSHOT_AFTER_CHANGES``), the leader then takes one when due and applies
snapshot retention (``pgq.snapshots.auto``).
With Redis configured, the leader also reconciles the Redis mirror after its
round (``reconcile_mirror``; the reconciler itself lives in ``pgq.redis.reconciler``),
so that rescued jobs reach Redis at once.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from psycopg_pool import ConnectionPool

from pgq.clock import Clock, SystemClock
from pgq.db import translated
from pgq.health.queries import HealthQueries
from pgq.health.retention import prune_samples
from pgq.errors import PgqError
from pgq.queries import PolicyQueries, Queries, Rescue
from pgq.queries.control import PURGE_BATCH
from pgq.scheduling.cron import CronReport, CronService
from pgq.settings import Settings
from pgq.snapshots.auto import AutoReport, AutoSnapshots

if TYPE_CHECKING:
    from pgq.redis.client import RedisClient
    from pgq.redis.reconciler import ReconcileReport, Reconciler

log = logging.getLogger("pgq.maintenance")

# Most worker rows deleted per round (the table holds one row per worker start).
PRUNE_WORKERS_LIMIT = 1000


@dataclass(frozen=True)
class PruneReport:
    """What one round's pruning did."""

    jobs: int = 0  # finished jobs deleted
    batches: int = 0  # prune_jobs calls (transactions)
    seconds: float = 0.0
    # True when the time budget ran out while batches still came back full:
    # prunable jobs are left for the next round (pruning is behind).
    backlog: bool = False
    # Dead jobs purged (PGQ_DEAD_JOB_RETENTION_SECONDS set), after the finished ones, in the same budget.
    dead_jobs: int = 0


@dataclass(frozen=True)
class MaintenanceReport:
    leader: bool
    stale: list[Rescue] = field(default_factory=list)
    timed_out: list[Rescue] = field(default_factory=list)
    pruned: int = 0  # finished jobs deleted (prune.jobs)
    # The reconciler pass that followed (Redis mode only; None if Redis was unavailable).
    reconciled: ReconcileReport | None = None
    prune: PruneReport = field(default_factory=PruneReport)
    workers_pruned: int = 0  # rows of workers gone for PGQ_WORKER_RETENTION_SECONDS, deleted
    health_samples_pruned: int = 0  # worker_health_logs rows past PGQ_HEALTH_RETENTION_SECONDS, deleted
    cron: CronReport | None = None  # the periodic schedules' ticks enqueued after the round (leader only)
    snapshots: AutoReport = field(default_factory=AutoReport)  # AUTO snapshots (issue 12)
    aged: int = 0  # jobs whose effective priority aging raised (queues with an aging step)

    @property
    def rescued_job_ids(self) -> list[int]:
        return [r.job_id for r in self.stale if r.job_id is not None]


class Maintenance:
    """Runs the housekeeping functions for one schema."""

    def __init__(
        self, settings: Settings, pool: ConnectionPool, queries: Queries | None = None,
        redis: RedisClient | None = None, clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.queries = queries or Queries(settings.schema)
        self.clock = clock or SystemClock()
        self.cron = CronService(settings.schema)
        self.policies = PolicyQueries(settings.schema)  # aging (queues with an aging step)
        self.auto_snapshots = AutoSnapshots(settings)
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
                report = self._round_and_prune(conn)
            else:
                with self.pool.connection() as pooled:
                    report = self._round_and_prune(pooled)
        if report.leader and self.reconciler is not None:
            # After the round's commit, on a connection of its own: rescued jobs reach Redis now.
            report = dataclasses.replace(report, reconciled=self.reconcile_mirror())
        return report

    def _round_and_prune(self, conn: Any) -> MaintenanceReport:
        report = self._round(conn)
        if not report.leader:
            return report
        started = self.clock.monotonic()
        prune = self.prune(conn)
        samples = prune_samples(conn, self.settings, HealthQueries(self.settings.schema), self.clock,
                                started + self.prune_budget_seconds())
        # Each due schedule ticks in a transaction of its own that takes the leader lock again.
        cron = self.cron.run_once(conn)
        return dataclasses.replace(report, pruned=prune.jobs, prune=prune, health_samples_pruned=samples, cron=cron,
                                   snapshots=self.take_snapshots(conn))

    def take_snapshots(self, conn: Any) -> AutoReport:
        """The leader's AUTO snapshot pass; a failure is logged and left for the next round."""
        if not self.auto_snapshots.enabled:
            return AutoReport()
        try:
            with translated(self.settings.database_url):
                return self.auto_snapshots.run_once(conn)
        except PgqError as exc:
            log.warning("maintenance: AUTO snapshot failed, trying again next round: %s", exc)
            return AutoReport()

    def prune_budget_seconds(self) -> float:
        """How long one round may prune: ``prune_time_budget_seconds``, at most half a
        heartbeat interval (a worker runs maintenance on its heartbeat thread)."""
        return min(self.settings.prune_time_budget_seconds, self.settings.heartbeat_interval_seconds / 2)

    def prune(self, conn: Any) -> PruneReport:
        """Delete finished jobs past the retention period, in batches, within the time budget;
        then, with ``dead_job_retention_seconds`` set, dead jobs past theirs, in the time left.

        Each batch is one ``prune_jobs`` (``purge_dead_jobs``) call in its own
        transaction, which takes the leader lock again: when another worker took the
        lead meanwhile, this one stops (the other prunes). A batch that comes back
        short means nothing prunable is left.
        """
        settings = self.settings
        started = self.clock.monotonic()
        deadline = started + self.prune_budget_seconds()
        jobs, batches, backlog, leading = self._batches(
            conn, lambda c: self.queries.prune_jobs_if_leader(c, settings.job_retention_seconds,
                                                              settings.prune_batch_size),
            settings.prune_batch_size, deadline)
        dead = 0
        if leading and not backlog and math.isfinite(settings.dead_job_retention_seconds):
            dead, more, backlog, _ = self._batches(
                conn, lambda c: self.queries.purge_dead_jobs_if_leader(c, settings.dead_job_retention_seconds),
                PURGE_BATCH, deadline)
            batches += more
        report = PruneReport(jobs, batches, round(self.clock.monotonic() - started, 3), backlog, dead)
        if backlog:
            log.warning("maintenance: pruned %d finished and %d dead job(s) in %d batch(es) in %.1f s; the time "
                        "budget (PGQ_PRUNE_TIME_BUDGET_SECONDS) ran out with more to prune, left for the next round",
                        report.jobs, report.dead_jobs, report.batches, report.seconds)
        elif jobs or dead:
            log.info("maintenance: pruned %d finished job(s) in %d batch(es) in %.2f s%s",
                     report.jobs, report.batches, report.seconds,
                     f" ({dead} dead job(s) past PGQ_DEAD_JOB_RETENTION_SECONDS among them)" if dead else "")
        return report

    def _batches(self, conn: Any, batch: Callable[[Any], int | None], size: int,
                 deadline: float) -> tuple[int, int, bool, bool]:
        """Run ``batch`` (one leader-only delete, its own transaction) until it comes back short,
        the lead is lost or the deadline passes: (rows, batches, budget ran out, still leading)."""
        rows = batches = 0
        while True:
            with conn.transaction():
                deleted = batch(conn)
            if deleted is None:  # another worker leads now
                return rows, batches, False, False
            rows += deleted
            batches += 1
            if deleted < size:
                return rows, batches, False, True
            if self.clock.monotonic() >= deadline:
                return rows, batches, True, True

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
            workers_pruned = self.queries.prune_workers(conn, self.settings.worker_retention_seconds,
                                                        PRUNE_WORKERS_LIMIT)
            aged = self.policies.age(conn)
        report = MaintenanceReport(True, stale, timed_out, workers_pruned=workers_pruned, aged=aged)
        if stale or timed_out:
            log.warning(
                "maintenance: %d stale worker row(s), %d job(s) rescued, %d timed out",
                len({r.worker_id for r in stale}), len(report.rescued_job_ids), len(timed_out),
            )
        if workers_pruned:
            log.info("maintenance: deleted the rows of %d worker(s) stopped or stale for longer than "
                     "PGQ_WORKER_RETENTION_SECONDS", workers_pruned)
        return report
