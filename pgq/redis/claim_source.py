"""The Redis accelerator's claim source: ids popped from Redis, claimed in Postgres.

``RedisClaimSource`` implements the worker's ``ClaimSource`` protocol (it does
not import ``pgq.worker``; the protocol is structural). It pops batches of ids
(atomically recorded as the worker's in Redis), claims them with
``pgq.claim_jobs_v2`` (positions and watermark from the fallback's, which are
the worker's), and takes the Postgres path through its ``fallback`` when
Redis is unavailable, the mirror is not built, or a safety-net poll is due.
Redis never decides anything: a popped id Postgres no longer calls runnable is
dropped by the claim.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from pgq.clock import Clock, SystemClock
from pgq.errors import RedisUnavailable
from pgq.queries import MirrorQueries, PolicyQueries
from pgq.redis.keys import AHEAD_SECONDS, BLOCK_SECONDS, MAX_RESOLVED, RESOLVED_FLUSH_SECONDS

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from pgq.job import Job
    from pgq.redis.client import RedisClient

log = logging.getLogger("pgq.redis")


class Counters(Protocol):
    """The worker's counters, as far as the claim source adds to them."""

    claim_round_trips: int

    def count(self, name: str, n: int = 1) -> None: ...


class _Positions(Protocol):
    """The worker's claim positions (``pgq.worker.positions.Positions``)."""

    def reserve(self, n: int) -> tuple[int, int | None]: ...

    def returned(self, base: int, jobs: Sequence[Job], error: BaseException | None = None) -> None: ...


class _Claimer(Protocol):
    """The Postgres path (``pgq.worker.claim.PostgresClaimSource``); its ``positions``
    are the worker's, which the Redis path's claims share."""

    @property
    def positions(self) -> _Positions: ...

    def claim(self, n: int, *, thorough: bool = False) -> list[Job]: ...

    def idle_wait(self, poll_seconds: float) -> float: ...


class RedisClaimSource:
    """One worker's claim source in Redis mode: pop ids, claim them in Postgres, finish, heartbeat.

    Implements ``pgq.worker.claim.ClaimSource``. ``claim`` takes the Postgres
    path (``fallback``) instead whenever Redis is unavailable, the mirror is not
    built, or Redis is empty while a safety-net poll of Postgres is due.

    A popped batch is deleted from Redis once claimed (see the ``pgq.redis``
    docstring): by the next pop, in the same round trip, so a busy worker
    makes one Redis call per claim batch. A worker that goes quiet deletes its
    claimed batches on its own: when it holds no job any more, when they have
    waited ``RESOLVED_FLUSH_SECONDS``, and before it blocks waiting for work.

    A busy worker also pops ahead: as many more ids as it claims in about
    ``AHEAD_SECONDS`` at its measured rate (at most ``claim_batch_size``),
    when the queue has a backlog of twice that; its next claims take them
    without a pop. This is the Postgres path's prefetch, for ids: while the
    queue is deep a worker pops about once per ``AHEAD_SECONDS`` of work
    rather than once per claim. The ids stay recorded in Redis until claimed
    (a crash gives them back), and the backlog rule leaves other workers
    plenty to take meanwhile.
    """

    max_claims_in_flight = 1  # a pop records one batch per worker: one claim at a time

    def __init__(self, client: RedisClient, worker_id: uuid.UUID, queues: Sequence[str], counters: Counters,
                 fallback: _Claimer, pool: Callable[[], ConnectionPool], clock: Clock | None = None) -> None:
        self.client = client
        self.fallback = fallback
        self.pool = pool
        self.clock = clock or SystemClock()
        self.worker = str(worker_id)
        self.worker_id = worker_id
        self.queues = list(queues)
        self.queries = MirrorQueries(client.settings.schema)
        self.policies = PolicyQueries(client.settings.schema)
        # Whether a queue of this worker has claim rules, and when that was read.
        self._ruled = False
        self._rules_checked = -math.inf
        self.counters = counters
        self.poll_every = client.settings.redis_poll_interval_seconds
        self._next_poll = self.clock.monotonic() + self.poll_every
        # Redis answered and the mirror is built: waits may rely on Redis wake-ups.
        self.trusted = False
        self._batches = itertools.count(1)
        self._turn = 0  # which queue a worker of several blocks on next (Redis Cluster)
        # Guards the collections below. Redis calls are made outside it: every
        # batch has a number of its own, so a deletion and a pop never touch the
        # same entry, and no thread waits for another's round trip.
        self._lock = threading.Lock()
        # Claimed batches still to delete from Redis, and since when some wait.
        self._claimed: list[str] = []
        self._claimed_since = 0.0
        # Jobs this worker claimed and has not finished: at shutdown the released
        # and interrupted ones among them go back to Redis at once.
        self._held: set[int] = set()
        # Ids popped ahead and not claimed yet, and the batch they belong to.
        self._reserve: list[tuple[int, int, str]] = []
        self._reserve_batch = ""
        # Jobs claimed per second through Redis (sizes the pops ahead).
        self._rate = 0.0
        self._last_claim = 0.0

    def _count(self, name: str, n: int = 1) -> None:
        self.counters.count(name, n)

    # ------------------------------------------------------------ ClaimSource
    @property
    def wakes_idle_worker(self) -> bool:
        """Redis answered and the mirror is built: Redis wakes this worker (push tokens)."""
        return self.trusted

    def claim(self, n: int, *, thorough: bool = False) -> list[Job]:
        """Claim up to ``n`` jobs: from Redis ids when the accelerator answers, else (or when
        Redis is empty and a safety-net poll is due, or ``thorough``) from Postgres.

        While one of this worker's queues has claim rules (``pgq.scheduling.policy``),
        every claim takes the Postgres path: only the database can weigh a claim
        against the rules, and the mirror does not offer those queues' jobs.
        """
        jobs = None if self._ruled_queues() else self.claim_from_redis(n, thorough=thorough)
        if jobs is None:
            jobs = self.fallback.claim(n, thorough=thorough)
            self._claimed_from_postgres(jobs)
        return jobs

    def _ruled_queues(self) -> bool:
        """Whether one of this worker's queues has claim rules (read at most once per
        ``poll_interval_seconds``; while it does, Redis does not wake this worker)."""
        now = self.clock.monotonic()
        if now >= self._rules_checked + self.client.settings.poll_interval_seconds:
            self._rules_checked = now
            with self.pool().connection() as conn:
                self._ruled = bool(self.policies.ruled(conn, self.queues))
            if self._ruled:
                self.trusted = False
        return self._ruled

    def idle_wait(self, poll_seconds: float) -> float:
        """Trusted: until the safety-net poll (Redis wakes this worker; due retries reach
        Redis through the reconciler). Otherwise as on the Postgres path."""
        if self.trusted:
            return min(poll_seconds, self.seconds_to_poll())
        return self.fallback.idle_wait(poll_seconds)

    def registered(self) -> None:
        self.heartbeat(0)
        self._register()

    def _register(self) -> None:
        """Name this worker's queues to Redis: a queue new there is marked built at once."""
        try:
            self.client.register(self.queues)
        except RedisUnavailable as exc:
            log.debug("queues not registered in Redis: %s", exc)

    def background(self, wake: Callable[[], None], idle: threading.Event,
                   stop: threading.Event) -> list[tuple[Callable[[], None], str]]:
        """The Redis waiter: while the claim loop is idle, block on the queues' wake
        lists (Redis, not Postgres) and wake the loop when work is pushed."""
        def waiter() -> None:
            while not stop.is_set():
                if not idle.wait(0.2):
                    continue
                woken = self.wait_for_work()
                if woken:
                    wake()
                elif woken is None:  # Redis unavailable: the loop polls Postgres meanwhile
                    stop.wait(0.5)

        return [(waiter, "pgq-redis-wait")]

    def interrupt(self) -> None:
        """Make a blocking wait return now (shutdown)."""
        self.interrupt_wait()

    def retire(self) -> None:
        """At shutdown: delete this worker's popped batches; their ids, and the jobs it
        claimed and did not finish (released, interrupted), go back to Redis if runnable."""
        self._retire()

    # ------------------------------------------------------------ Redis path

    def seconds_to_poll(self) -> float:
        """Seconds until the next safety-net poll of Postgres."""
        return max(0.0, self._next_poll - self.clock.monotonic())

    def claim_from_redis(self, n: int, *, thorough: bool = False) -> list[Job] | None:
        """Claim up to ``n`` jobs from ids popped ahead, then popped now; None: take
        the Postgres path now.

        ``thorough``: when Redis has nothing, ask Postgres at once (``run_once``, burst mode).
        Raises what the database raises (the ids taken are given back first), unless
        an earlier claim of this call got jobs: those are returned.
        """
        got: list[Job] = []
        for _ in range(4):
            want = n - len(got)
            take, done = self._take_reserve(want)
            short = False  # Redis has no more (or cannot be asked): claim what we hold and stop
            if len(take) < want:
                popped, batch = self._pop(want - len(take))
                if popped is None:
                    if not take and not got:
                        return None
                    short = True
                else:
                    short = len(popped) < want - len(take)
                    rest = popped[want - len(take):]
                    take += popped[:want - len(take)]
                    if rest:
                        with self._lock:
                            self._reserve, self._reserve_batch = rest, batch
                    elif popped:
                        done.append(batch)
            if not take:
                if got:
                    return got
                if thorough or self.clock.monotonic() >= self._next_poll:
                    self._next_poll = self.clock.monotonic() + self.poll_every
                    self._count("redis_safety_polls")
                    return None
                return []
            try:
                got += self._claim_taken(take, done)
            except Exception:
                if not got:
                    raise
                # The jobs claimed already are this worker's: hand them over. A lasting
                # cause (a drain, a stale worker, the database gone) fails the next claim.
                return got
            if len(got) >= n or short:
                break
            # Some ids were stale: there may be good ones behind them.
        if not got and thorough:
            return None  # every id popped was stale: Postgres has the last word (run_once, burst)
        return got

    def _take_reserve(self, want: int) -> tuple[list[tuple[int, int, str]], list[str]]:
        """Up to ``want`` ids popped ahead, and the batch they emptied (if they did)."""
        with self._lock:
            take, self._reserve = self._reserve[:want], self._reserve[want:]
            done = [self._reserve_batch] if take and not self._reserve else []
        return take, done

    def _pop(self, count: int) -> tuple[list[tuple[int, int, str]] | None, str]:
        """Pop ``count`` ids (and ids ahead), deleting claimed batches on the way;
        None when Redis cannot be used now."""
        batch = str(next(self._batches))
        # What this worker claims in AHEAD_SECONDS, like the prefetch of the Postgres
        # path: the next claims take it without a pop.
        ahead = min(self.client.settings.claim_batch_size, round(self._rate * AHEAD_SECONDS)) \
            if len(self.queues) == 1 else 0
        self._count("redis_pops")
        claimed = self._take_claimed()
        try:
            popped = self.client.pop(self.worker, self.queues, count, batch, claimed, ahead)
        except RedisUnavailable:
            self._keep_claimed(claimed)
            self.trusted = False
            self._count("redis_unavailable")
            return None, batch
        if popped is None:
            self.trusted = False
            self._count("redis_not_built")
            self._register()
            return None, batch
        self.trusted = True
        return popped, batch

    def _claim_taken(self, take: list[tuple[int, int, str]], done: list[str]) -> list[Job]:
        """Claim ``take`` in Postgres; ``done``: batches this empties (deleted afterwards)."""
        ids = [job_id for job_id, _, _ in take]
        self._count("redis_popped", len(ids))
        positions = self.fallback.positions
        base, started_through = positions.reserve(len(ids))
        try:
            with self.pool().connection() as conn:
                self.counters.claim_round_trips += 1
                jobs = self.queries.claim_jobs_v2(conn, ids, self.worker_id, base, started_through)
        except BaseException as exc:
            positions.returned(base, [], exc)
            # Not claimed (database error, worker not active): put the ids back as
            # they were, with those popped ahead; stale ones are dropped by whoever
            # pops them next.
            with self._lock:
                reserve, self._reserve = self._reserve, []
                batches = [*done, self._reserve_batch] if reserve else done
            try:
                self.client.give_back(self.worker, self.queues, batches, take + reserve)
            except RedisUnavailable as exc:  # left in Redis: see retire and the reconciler
                log.debug("could not give back popped ids: %s", exc)
            raise
        positions.returned(base, jobs)
        dropped = len(ids) - len(jobs)
        if dropped:
            self._count("redis_dropped", dropped)
        self._count("redis_claimed", len(jobs))
        now = self.clock.monotonic()
        with self._lock:
            self._held.update(job.id for job in jobs)
            if self._last_claim:
                rate = len(jobs) / max(now - self._last_claim, 1e-3)
                self._rate = rate if self._rate == 0.0 else 0.7 * self._rate + 0.3 * rate
            self._last_claim = now
        self._keep_claimed(done)
        return jobs

    def _take_claimed(self) -> list[str]:
        with self._lock:
            claimed, self._claimed = self._claimed, []
        return claimed

    def _keep_claimed(self, batches: Sequence[str]) -> None:
        """Remember batches to delete from Redis."""
        if not batches:
            return
        with self._lock:
            if not self._claimed:
                self._claimed_since = self.clock.monotonic()
            self._claimed.extend(batches)
            # Redis unreachable for long: forget the oldest (retire, or the reconciler
            # for a dead worker, deletes them in Redis; an old one is only given back).
            del self._claimed[:-MAX_RESOLVED]

    def forget_claimed(self) -> None:
        """Delete the claimed batches from Redis now (errors only log)."""
        claimed = self._take_claimed()
        if not claimed:
            return
        try:
            self.client.forget_batches(self.worker, self.queues, claimed)
        except RedisUnavailable as exc:
            self._keep_claimed(claimed)
            log.debug("popped batches not deleted: %s", exc)

    def _claimed_from_postgres(self, jobs: Sequence[Job]) -> None:
        """Jobs claimed through the Postgres path: remove their ids from the ready sets."""
        if not jobs:
            return
        with self._lock:
            self._held.update(job.id for job in jobs)
        if self.trusted:
            try:
                self.client.forget((job.id, job.queue) for job in jobs)
            except RedisUnavailable:
                self.trusted = False

    def finished(self, job_ids: Sequence[int]) -> None:
        """This worker is done with these jobs (their outcome is about to be written,
        or there is none to write). No Redis call while the worker stays busy: its
        batches are deleted by its next pop."""
        with self._lock:
            self._held.difference_update(job_ids)
            due = bool(self._claimed) and (
                not self._held or self.clock.monotonic() - self._claimed_since >= RESOLVED_FLUSH_SECONDS)
        if due:
            # Quiet now, and the next pop may be far off: delete the batches at once,
            # so that Redis shows what this worker really holds (``pgq status``) and
            # no claimed batch lingers until it looks abandoned.
            self.forget_claimed()

    def heartbeat(self, load: int) -> None:
        info = {"hostname": socket.gethostname(), "pid": os.getpid(), "queues": self.queues, "load": load}
        try:
            self.client.heartbeat(self.worker, info)
        except RedisUnavailable as exc:
            log.debug("Redis heartbeat skipped: %s", exc)

    def wait_for_work(self, timeout: float = BLOCK_SECONDS) -> bool | None:
        """Block on the wake lists; True on a token, False on timeout, None if Redis is unavailable.

        Claimed batches are deleted first: an idle worker pops nothing that would."""
        self.forget_claimed()
        try:
            self._turn += 1
            return self.client.wait_for_work(self.worker, self.queues, timeout, self._turn)
        except RedisUnavailable:
            self.trusted = False
            return None

    def interrupt_wait(self) -> None:
        try:
            self.client.interrupt_wait(self.worker, self.queues)
        except RedisUnavailable:
            pass

    def _retire(self) -> None:
        with self._lock:
            held, self._held = self._held, set()
            self._claimed = []
            self._reserve = []
        try:
            ids = sorted(set(self.client.retire(self.worker, self.queues)) | held)
            if ids:
                with self.pool().connection() as conn:
                    entries = self.queries.runnable_entries(conn, ids)
                self.client.push(entries)
        except RedisUnavailable as exc:
            log.info("could not retire from Redis (%s); the reconciler cleans up", exc)
        except Exception as exc:
            log.warning("could not give back this worker's Redis ids (%s); the reconciler cleans up", exc)
