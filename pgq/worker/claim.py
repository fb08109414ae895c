"""Where a worker's jobs come from: the ``ClaimSource`` protocol and its Postgres implementation.

A claim source claims jobs for one worker and hears about their life in the
worker (registered, heartbeat, finished, shutdown). The worker talks only to
this protocol: ``PostgresClaimSource`` claims with ``pgq.get_runnable_jobs_v2``;
the Redis accelerator's source (``pgq.redis.claim_source.RedisClaimSource``)
pops ids from Redis, claims them in Postgres (``claim_jobs_v2``) and falls back
to a ``PostgresClaimSource``. Both take each claim's positions from, and send
the watermark of, the worker's ``Positions``. A claim is always made in
Postgres; what a claim means is the stored functions' business.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from pgq.job import Job
    from pgq.queries import Queries
    from pgq.worker.counters import WorkerCounters
    from pgq.worker.positions import Positions

log = logging.getLogger("pgq.worker")

#: A background thread a claim source wants: (target, thread name).
Background = tuple[Callable[[], None], str]


class ClaimSource(Protocol):
    """Claims jobs for one worker. Every method may be called from several threads."""

    @property
    def max_claims_in_flight(self) -> int | None:
        """The most claims this source takes at once (None: the worker's setting decides)."""
        ...

    @property
    def wakes_idle_worker(self) -> bool:
        """True while the source wakes an idle worker itself (a NOTIFY need not)."""
        ...

    def claim(self, n: int, *, thorough: bool = False) -> list[Job]:
        """Claim up to ``n`` jobs (transition queued/retrying -> running, in Postgres).

        ``thorough``: look in Postgres too when a faster path has nothing (``run_once``
        and burst mode must not miss a job). Raises ``WorkerDraining`` when the
        worker was asked to drain, ``InvalidTransition`` when it is not active
        (stale: register again), and what the database raises.
        """
        ...

    def idle_wait(self, poll_seconds: float) -> float:
        """How long an idle worker waits for work before claiming again (at most ``poll_seconds``)."""
        ...

    def registered(self) -> None:
        """The worker (re)registered in Postgres."""
        ...

    def heartbeat(self, load: int) -> None:
        """The worker sent its heartbeat, holding ``load`` jobs."""
        ...

    def finished(self, job_ids: Sequence[int]) -> None:
        """The worker is done with these jobs: their outcome is about to be written, or has none."""
        ...

    def background(self, wake: Callable[[], None], idle: threading.Event,
                   stop: threading.Event) -> list[Background]:
        """Threads the source needs while the worker runs (``wake``: wake the claim loop;
        ``idle`` is set while the loop waits for work; ``stop`` ends them)."""
        ...

    def interrupt(self) -> None:
        """Shutdown: make the source's background threads return soon."""
        ...

    def retire(self) -> None:
        """Shutdown, after deregistering: give back whatever the source still holds."""
        ...


class PostgresClaimSource:
    """Claims with ``pgq.get_runnable_jobs_v2``; an idle worker waits for the next due job or the poll.

    ``pool`` returns the connection pool (the queue opens it on first use);
    ``positions`` gives each claim its positions and watermark.
    """

    max_claims_in_flight: int | None = None
    wakes_idle_worker = False

    def __init__(self, pool: Callable[[], ConnectionPool], queries: Queries, worker_id: uuid.UUID, queues: Sequence[str],
                 counters: WorkerCounters, positions: Positions) -> None:
        self.pool = pool
        self.queries = queries
        self.worker_id = worker_id
        self.queues = list(queues)
        self.counters = counters
        self.positions = positions
        self._lock = threading.Lock()  # claims run on several claimer threads

    def claim(self, n: int, *, thorough: bool = False) -> list[Job]:
        base, started_through = self.positions.reserve(n)
        try:
            with self.pool().connection() as conn:
                with self._lock:
                    self.counters.claim_round_trips += 1
                jobs = self.queries.get_runnable_jobs_v2(conn, self.queues, self.worker_id, n, base, started_through)
        except BaseException as exc:
            self.positions.returned(base, [], exc)
            raise
        self.positions.returned(base, jobs)
        return jobs

    def idle_wait(self, poll_seconds: float) -> float:
        """The poll interval, or less when a delayed or retrying job falls due sooner
        (NOTIFY only covers jobs due at once)."""
        try:
            with self.pool().connection() as conn:
                due = self.queries.seconds_until_next_due(conn, self.queues)
        except Exception as exc:  # only an optimisation: fall back to polling
            log.debug("next-due lookup failed: %s", exc)
            return poll_seconds
        return poll_seconds if due is None else min(poll_seconds, due)

    def registered(self) -> None:
        pass

    def heartbeat(self, load: int) -> None:
        pass

    def finished(self, job_ids: Sequence[int]) -> None:
        pass

    def background(self, wake: Callable[[], None], idle: threading.Event,
                   stop: threading.Event) -> list[Background]:
        return []

    def interrupt(self) -> None:
        pass

    def retire(self) -> None:
        pass

