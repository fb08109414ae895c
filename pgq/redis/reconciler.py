"""The reconciler: keeps the Redis mirror in step with Postgres, one leader at a time.

``Reconciler.run_once()`` is one pass (it reads Postgres, writes only Redis):
a rebuild when the mirror is missing, otherwise the window of jobs that
became runnable since the previous pass's horizon, the batches of dead
workers and abandoned batches, and stale ids at the head of each ready set.
``ReconcilerService`` is a worker's part: the lease, the interval and the
NOTIFY-triggered quick passes. The ``pgq.redis`` docstring explains why a pass
costs what changed rather than the table size.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pgq.db import translated
from pgq.errors import RedisUnavailable
from pgq.queries import MirrorQueries, PauseQueries
from pgq.redis.keys import ABANDONED_MS, HEAD_CHECK, MAX_LOOKBACK_SECONDS, PAGE, Keys

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from pgq.clock import Clock
    from pgq.redis.client import RedisClient
    from pgq.settings import Settings

log = logging.getLogger("pgq.redis")


class _Counters(Protocol):
    errors: int


@dataclass(frozen=True)
class ReconcileReport:
    """What one reconcile pass did."""

    rebuilt: bool = False
    full: bool = False
    offered: int = 0
    added: int = 0
    abandoned: int = 0  # ids of batches popped long ago and never claimed, looked at again
    reclaimed_workers: list[str] = field(default_factory=list)
    removed: int = 0
    committed: bool = False
    horizon: dt.datetime | None = None


class Reconciler:
    """Keeps the Redis mirror in step with Postgres; run by one leader at a time.

    ``run_once()`` is one pass: a rebuild when the mirror is missing, otherwise
    the window of what became runnable since the last pass's horizon, the
    batches of dead workers and abandoned batches, and stale ids at the head
    of each ready set (all of it for a full sweep). Concurrent passes are
    safe (every write is idempotent, every watermark a pass stores is backed
    by its own scan); the lease only avoids duplicate work.
    """

    def __init__(self, settings: Settings, pool: ConnectionPool, client: RedisClient) -> None:
        self.settings = settings
        self.pool = pool
        self.client = client
        self.queries = MirrorQueries(settings.schema)
        self.pauses = PauseQueries(settings.schema)
        self.is_leader = False
        self._owner: str | None = None

    def lead(self, owner: str) -> bool:
        """Take or extend the lease for ``owner``; False when another process holds it."""
        ttl = max(10.0, 5 * self.settings.redis_reconcile_interval_seconds)
        try:
            self.is_leader = self.client.lead(owner, ttl)
        except RedisUnavailable:
            self.is_leader = False
        self._owner = owner if self.is_leader else None
        return self.is_leader

    def run_once(self, conn: Any = None, *, full: bool = False, quick: bool = False) -> ReconcileReport:
        """One pass (writes nothing in Postgres; reads only).

        Args:
            conn: an autocommit psycopg connection to use instead of the pool.
            full: compare every mirrored id with Postgres (also done every
                ``redis_full_sweep_interval_seconds``).
            quick: only the window of newly runnable jobs (a NOTIFY-triggered pass).
        Raises:
            RedisUnavailable, DatabaseError.
        """
        with translated(self.settings.database_url):
            if conn is not None:
                return self._pass(conn, full, quick)
            with self.pool.connection() as pooled:
                return self._pass(pooled, full, quick)

    def _pass(self, conn: Any, full: bool, quick: bool) -> ReconcileReport:
        state = self.client.state()
        if not state.get("epoch") or state.get("layout") != Keys.LAYOUT:
            if state.get("epoch"):
                log.warning("the Redis mirror has an older key layout: rebuilding it (%d old key(s) deleted)",
                            self.client.delete_legacy())
            return self._rebuild(conn)
        # A node that lost its data (a restart without persistence, a Cluster
        # failover to a replica that had not caught up on the marker): rebuild
        # the queues whose ready sets are no longer marked built.
        lost = self.client.unbuilt(self.client.queues())
        if lost:
            self._rebuild_queues(conn, lost, state["epoch"])
        # The horizon is read first, in a statement of its own: whatever commits
        # after the window scan's snapshot started after this horizon or was open then.
        horizon, now = self.queries.horizon(conn)
        horizon = max(horizon, now - dt.timedelta(seconds=MAX_LOOKBACK_SECONDS))
        full = full or (not quick and age(state.get("full_at"), now) >= self.settings.redis_full_sweep_interval_seconds)
        since = dt.datetime.fromisoformat(state["horizon"])
        # A queue resumed since the last pass: its jobs left the mirror while it was
        # paused (not offered, removed as stale, dropped by claims), and their run_at
        # is older than the window: offer everything again (resume is rare).
        full = full or self.pauses.resumed_since(conn, since)
        offered, added = self._offer_window(conn, "-infinity" if full else since)
        reclaimed: list[str] = []
        abandoned = removed = 0
        if not quick:
            reclaimed, abandoned = self._reclaim_popped(conn)
            removed = self._remove_stale(conn, None if full else HEAD_CHECK)
        committed = self.client.commit(state["epoch"], horizon.isoformat(), now.isoformat(), full=full)
        report = ReconcileReport(False, full, offered, added, abandoned, reclaimed, removed, committed, horizon)
        if added or reclaimed or removed:
            log.info("mirror reconciled: %d id(s) added, %d stale removed, %d dead worker(s) cleaned",
                     added, removed, len(reclaimed))
        return report

    def _rebuild(self, conn: Any) -> ReconcileReport:
        queues = sorted(set(self.client.queues()) | set(self.queries.runnable_counts(conn)))
        token = self.client.begin_build(queues)
        horizon, now = self.queries.horizon(conn)
        offered, added = self._offer_window(conn, "-infinity")
        reclaimed, _ = self._reclaim_popped(conn)
        epoch = self.client.finish_build(token, horizon.isoformat(), now.isoformat())
        if epoch is not None:
            self.client.finish_queues(token, queues, epoch)
            log.log(logging.WARNING if offered else logging.INFO,
                    "Redis mirror built from Postgres: %d runnable job(s)", offered)
        else:
            log.warning("Redis lost its data during the mirror rebuild; the next pass starts over")
        return ReconcileReport(True, True, offered, added, 0, reclaimed, 0, epoch is not None, horizon)

    def _rebuild_queues(self, conn: Any, queues: list[str], epoch: str) -> None:
        """Rebuild the ready sets of ``queues`` (their node lost its data); their
        workers take the Postgres path until each is marked built again."""
        token = self.client.begin_build(queues, whole=False)
        offered, _ = self._offer_window(conn, "-infinity", only=set(queues))
        done = self.client.finish_queues(token, queues, epoch)
        log.warning("Redis lost the ready sets of %d queue(s): rebuilt %d from Postgres (%d runnable job(s))",
                    len(queues), len(done), offered)

    def _offer_window(self, conn: Any, after: dt.datetime | str, only: set[str] | None = None) -> tuple[int, int]:
        """Mirror every runnable, due job after ``after`` (paged; of the queues ``only``
        when given); return (seen, added)."""
        after_id = 0
        seen = added = 0
        while True:
            # Rows runnable in the page's snapshot that a worker popped since are
            # taken: leave them out, or the worker who pops them next drops them.
            cutoff = self.client.time_ms()
            rows = self.queries.runnable_after(conn, after, after_id, PAGE)
            if rows:
                entries = [(i, q, p) for i, q, p, _ in rows if only is None or q in only]
                seen += len(entries)
                added += self.client.push(entries, popped_before=cutoff)
                after, after_id = rows[-1][3], rows[-1][0]
                if self._owner is not None:
                    self.lead(self._owner)  # a long rebuild keeps its lease
            if len(rows) < PAGE:
                return seen, added

    def _reclaim_popped(self, conn: Any) -> tuple[list[str], int]:
        """Ids popped and never claimed go back to the ready sets (those Postgres still
        calls runnable): every batch of a worker Postgres says is gone, and batches
        of live workers popped ``ABANDONED_MS`` ago (they could not give them back).
        Returns (dead workers cleaned, ids of abandoned batches looked at)."""
        by_queue = {q: self.client.owners(q) for q in self.client.queues()}
        owners = sorted({w for ws in by_queue.values() for w in ws})
        if not owners:
            return [], 0
        dead = self._dead(conn, owners)
        for worker in dead:
            held = self.client.retire(worker, [q for q, ws in by_queue.items() if worker in ws])
            if held:
                self.client.push(self.queries.runnable_entries(conn, held))
        if dead:
            log.info("mirror: gave back the popped ids of %d dead worker(s)", len(dead))
        now_ms = self.client.time_ms()  # pop times are on Redis' clock
        looked = 0
        for queue, workers in by_queue.items():
            batches = self.client.popped_batches(queue, [w for w in workers if w not in dead])
            old = {w: {b: ids for b, (popped_ms, ids) in found.items() if now_ms - popped_ms >= ABANDONED_MS}
                   for w, found in batches.items()}
            look = [i for found in old.values() for ids in found.values() for i in ids]
            if look:
                self.client.push(self.queries.runnable_entries(conn, look))
                for worker, found in old.items():
                    self.client.forget_batches(worker, [queue], list(found))
                looked += len(look)
        if looked:
            log.info("mirror: gave back %d id(s) of batches popped %d s ago and never claimed",
                     looked, ABANDONED_MS // 1000)
        return dead, looked

    def _dead(self, conn: Any, owners: list[str]) -> list[str]:
        """Those of ``owners`` without a heartbeat key that Postgres says are gone."""
        beating = self.client.beating(owners)
        suspects = [w for w in owners if w not in beating]
        if not suspects:
            return []
        ids = []
        for w in suspects:
            try:
                ids.append(uuid.UUID(w))
            except ValueError:
                continue
        live = {str(u) for u in self.queries.live_workers(conn, ids)}
        return [w for w in suspects if w not in live]

    def _remove_stale(self, conn: Any, per_queue: int | None) -> int:
        """Remove ids Postgres says are not runnable (not due, claimed, finished)
        from the head of each ready set (``per_queue`` ids; all for None)."""
        removed = 0
        for queue in self.client.queues():
            ids = self.client.head(queue, per_queue)
            for start in range(0, len(ids), PAGE):
                chunk = ids[start:start + PAGE]
                runnable = {i for i, _, _ in self.queries.runnable_entries(conn, chunk)}
                removed += self.client.remove(queue, [i for i in chunk if i not in runnable])
        return removed


def age(stamp: str | None, now: dt.datetime) -> float:
    """Seconds from an ISO timestamp stored in Redis to ``now`` (infinite when missing)."""
    if not stamp:
        return float("inf")
    return (now - dt.datetime.fromisoformat(stamp)).total_seconds()


class ReconcilerService:
    """Runs a worker's part in reconciling: take part in the lease; as the leader,
    reconcile every ``redis_reconcile_interval_seconds``, and soon after a NOTIFY.

    ``run_once()`` is one turn (None when another process leads); ``run(stop)``
    loops until ``stop`` is set.
    """

    def __init__(self, reconciler: Reconciler, owner: str, settings: Settings, clock: Clock,
                 counters: _Counters) -> None:
        self.reconciler = reconciler
        self.owner = owner
        self.interval = settings.redis_reconcile_interval_seconds
        self.clock = clock
        self.counters = counters
        self._poke = threading.Event()
        self._next_tick = 0.0

    def on_job_available(self) -> None:
        """A NOTIFY said a queue got work: the leader runs a quick pass soon (jobs
        enqueued without a push: transactional, SQL, other languages)."""
        if self.reconciler.is_leader:
            self._poke.set()

    def wake(self) -> None:
        """End the wait for the next turn now (shutdown)."""
        self._poke.set()

    def run_once(self) -> ReconcileReport | None:
        """One turn: a full pass on the clock, a quick one (only what became runnable)
        when poked in between. Raises ``RedisUnavailable``, ``DatabaseError``."""
        quick = self.clock.monotonic() < self._next_tick
        if not quick:
            self._next_tick = self.clock.monotonic() + self.interval
        if self.reconciler.lead(self.owner):
            return self.reconciler.run_once(quick=quick)
        return None

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # the loop must survive Redis and database outages
                self.counters.errors += 1
                log.warning("mirror reconciliation failed: %s", exc)
            # At most one NOTIFY-triggered pass per 20 ms, however many notifications arrive.
            stop.wait(0.02)
            self._poke.wait(max(0.0, self._next_tick - self.clock.monotonic()))
            self._poke.clear()
