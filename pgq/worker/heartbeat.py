"""The worker's heartbeat, and the thread that runs it with the maintenance round.

``Heartbeat.run_once()`` tells Postgres which jobs this worker holds: the
runner's (buffered or running) and the acknowledger's (finished, outcome not
written yet). ``heartbeat_worker`` rescues a job the worker owns but does not
list, so a job stays listed until its outcome is committed or given up. Jobs
the database says the worker no longer owns (cancelled, rescued, timed out)
have their handlers stopped. ``Background`` runs the heartbeat and, when this
worker takes part, the maintenance round on their intervals.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from pgq.clock import Clock
    from pgq.queries import Queries
    from pgq.worker.acknowledger import Acknowledger
    from pgq.worker.claim import ClaimSource
    from pgq.worker.counters import WorkerCounters
    from pgq.worker.runner import Runner

log = logging.getLogger("pgq.worker")


class Service(Protocol):
    """A periodic job of the worker's background thread."""

    def run_once(self) -> Any: ...


class Heartbeat:
    """One worker's heartbeat (``run_once``: one beat)."""

    def __init__(self, pool: Callable[[], ConnectionPool], queries: Queries, worker_id: uuid.UUID, runner: Runner,
                 acknowledger: Acknowledger, source: ClaimSource) -> None:
        self.pool = pool
        self.queries = queries
        self.worker_id = worker_id
        self.runner = runner
        self.acknowledger = acknowledger
        self.source = source

    def held_ids(self) -> list[int]:
        """The jobs this worker holds: not finished, or finished with the outcome not written.

        The runner is read first: a finishing job is queued with the acknowledger
        before it leaves the runner, so it is in one of the two lists.
        """
        held = self.runner.owned_ids()
        return sorted(set(held).union(self.acknowledger.pending_ids()))

    def run_once(self) -> list[int]:
        """Send a heartbeat; stop the handlers of jobs this worker no longer owns.

        Returns the ids of those jobs. Raises what the database raises.
        """
        held = self.held_ids()
        with self.pool().connection() as conn:
            beat = self.queries.heartbeat_worker(conn, self.worker_id, len(held), held)
        if beat.previous_status == "stale":
            log.warning("worker %s had been marked stale; its jobs were rescued", self.worker_id)
        for job_id in beat.lost_job_ids:
            self.runner.abandon(job_id, "no longer owned (cancelled, rescued or timed out)")
        self.source.heartbeat(len(held))
        return list(beat.lost_job_ids)


class Background:
    """Runs the heartbeat every ``beat_every`` seconds and ``maintenance`` (if any) every
    ``maintain_every`` seconds, on one thread, surviving database outages."""

    def __init__(self, heartbeat: Service, maintenance: Service | None, clock: Clock, counters: WorkerCounters,
                 *, beat_every: float, maintain_every: float) -> None:
        self.heartbeat = heartbeat
        self.maintenance = maintenance
        self.clock = clock
        self.counters = counters
        self.beat_every = beat_every
        self.maintain_every = maintain_every

    def run(self, stop: threading.Event) -> None:
        next_beat = self.clock.monotonic() + self.beat_every
        next_maintenance = self.clock.monotonic()
        while not stop.is_set():
            now = self.clock.monotonic()
            try:
                if now >= next_beat:
                    next_beat = now + self.beat_every
                    self.heartbeat.run_once()
                if self.maintenance is not None and now >= next_maintenance:
                    next_maintenance = now + self.maintain_every
                    self.maintenance.run_once()
            except Exception as exc:  # the loop must survive database outages
                self.counters.errors += 1
                log.warning("heartbeat/maintenance failed: %s", exc)
            due = min(next_beat, next_maintenance) if self.maintenance is not None else next_beat
            stop.wait(max(0.01, due - self.clock.monotonic()))
