"""Deciding when and how much to claim, and running the claims.

The ``ClaimLoop`` runs in the worker's main thread: it sizes the next claim
(``prefetch.size_claim``), waits while the runners are full, the queue looks
empty or the acknowledger is behind, and hands claim requests to claimer
threads. Up to ``claims_in_flight`` claims run at once, each on its own pooled
connection: while one waits for the database, the jobs of another are
dispatched and run, so a busy worker never idles between round trips. The
jobs of the claims are dispatched in the order the claims were requested
(``InOrder``), whichever comes back first, so jobs start in the order of
their claim positions (``positions``). An idle worker's NOTIFY is claimed on
the LISTEN thread itself (``claim_or_announce``): one thread hand-off less
between the notification and the handler. A refused claim ends claiming when the
worker was asked to drain, and registers the worker again when it was marked
stale. Claims themselves are the ``ClaimSource``'s business.
"""

from __future__ import annotations

import logging
import queue as queue_module
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from pgq.db import translated
from pgq.errors import InvalidTransition, PgqError, WorkerDraining
from pgq.health.evacuation import claim_batch
from pgq.worker.prefetch import ALWAYS, RateWindow, size_claim

if TYPE_CHECKING:
    from pgq.clock import Clock
    from pgq.health.evacuation import EvacuationPolicy
    from pgq.job import Job
    from pgq.settings import Settings
    from pgq.worker.acknowledger import Acknowledger
    from pgq.worker.claim import ClaimSource
    from pgq.worker.counters import WorkerCounters
    from pgq.worker.positions import Positions
    from pgq.worker.runner import Runner

log = logging.getLogger("pgq.worker")

T = TypeVar("T")


class InOrder(Generic[T]):
    """Delivers results in the order their tickets were issued, whatever order they finish in.

    ``ticket()`` numbers a request; ``done(ticket, result, deliver)`` calls
    ``deliver`` for this result and every later one already done, in ticket
    order, once every earlier ticket is done. Deliveries never overlap.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._issued = 0
        self._next = 0
        self._done: dict[int, T] = {}

    def ticket(self) -> int:
        with self._lock:
            self._issued += 1
            return self._issued - 1

    def done(self, ticket: int, result: T, deliver: Callable[[T], None]) -> None:
        with self._lock:
            self._done[ticket] = result
            while self._next in self._done:
                deliver(self._done.pop(self._next))
                self._next += 1


class ClaimLoop:
    """One worker's claiming: when, how much, and the claimer threads that do it.

    Shares ``runner.lock`` for its own state, so that jobs held by the runner and
    jobs asked for by claims in flight are counted together. Lock order: the
    ``InOrder`` lock, then ``runner.lock`` (a delivery dispatches jobs); never the
    other way round.
    """

    def __init__(self, worker_id: uuid.UUID, settings: Settings, source: ClaimSource, runner: Runner,
                 acknowledger: Acknowledger, counters: WorkerCounters, clock: Clock, *, concurrency: int,
                 batch_size: int, wake: threading.Event, stopping: threading.Event, idle: threading.Event,
                 positions: Positions, reregister: Callable[[], None], drain: Callable[[str], None],
                 due_in: Callable[[], float | None] | None = None, health: EvacuationPolicy | None = None) -> None:
        self.worker_id = worker_id
        self.settings = settings
        self.source = source
        self.runner = runner
        self.acknowledger = acknowledger
        self.counters = counters
        self.clock = clock
        self.concurrency = concurrency
        self.batch_size = batch_size
        # The worker's latest health score sizes its claims (``claim_batch``).
        self.health = health
        self._wake = wake
        self._stopping = stopping
        self._idle = idle
        self.positions = positions
        self._reregister = reregister
        # Burst mode: seconds until the earliest queued or retrying job of the worker's
        # queues is due (None: none), asked of Postgres before a burst run ends.
        self._due_in = due_in
        self._burst_misses = 0  # a job was due now, yet the claims after it found nothing
        self._burst_seen = 0  # runner.finished when that was last counted
        self._drain = drain
        self._lock = runner.lock
        self._rate = RateWindow()
        self._requests: queue_module.SimpleQueue[tuple[int, int] | None] = queue_module.SimpleQueue()
        self._order: InOrder[tuple[int, list[Job], Exception | None]] = InOrder()
        self._out = 0  # claims in flight
        self._claiming = 0  # jobs asked for by the claims in flight
        self._error: Exception | None = None
        self._looked_empty = False  # a claim returned fewer jobs than asked for
        self._last_empty = False  # the latest claim to return found no job at all
        # Work was announced (NOTIFY, a LISTEN reconnect) after the latest claim was
        # asked for: that claim may have looked before the job was committed, so an
        # empty answer from it does not mean the queue is empty.
        self._announced = False
        # True while ``run`` claims in a long-running mode: the LISTEN thread may then
        # claim for an idle worker itself (``claim_or_announce``).
        self._open = False

    # ------------------------------------------------------------ one claim
    def claim(self, n: int, *, thorough: bool = False) -> list[Job]:
        """Claim up to ``n`` jobs from the source.

        A refused claim claims nothing: from a worker asked to drain (``PQ005``),
        it starts the drain (no claim follows); from a worker marked stale (its
        heartbeats could not reach the database, and its jobs were rescued), it
        drops the jobs buffered and not started (no longer this worker's) and
        registers again.
        """
        sent = self.clock.monotonic()
        try:
            with translated(self.settings.database_url):
                jobs = self.source.claim(n, thorough=thorough)
        except WorkerDraining:
            self._drain("a claim was refused: the worker is draining (PQ005)")
            return []
        except InvalidTransition as exc:
            dropped = self.runner.take_unstarted()
            if dropped:
                self.source.finished([slot.job.id for slot in dropped])
            log.warning("worker %s may not claim (%s); dropped %d buffered job(s) and registering again",
                        self.worker_id, exc, len(dropped))
            self._reregister()
            return []
        metrics = self.counters.metrics if self.counters.metrics.enabled else None
        exporter = self.counters.exporter
        seconds = self.clock.monotonic() - sent if metrics is not None or exporter is not None else 0.0
        with self._lock:
            self.counters.claimed += len(jobs)
            if metrics is not None:
                metrics.claim_round_trip(seconds)
        if exporter is not None:
            exporter.claimed(len(jobs), seconds)
        return jobs

    def hand_over(self, jobs: list[Job]) -> None:
        """Give claimed jobs to the runner, in claim order.

        A job this worker still holds on the same attempt (a rescue gave the attempt
        back and this worker claimed the job again: the fence cannot tell the two
        claims apart) is not started a second time: the copy held settles it. A copy
        held on an earlier attempt is obsolete (its outcome will be refused): its
        handler is asked to stop, and the new claim runs.
        """
        ids = [job.id for job in jobs]
        again: set[int] = set()
        obsolete: list[int] = []
        with self._lock:
            in_flight = self.runner.in_flight
            for job in jobs:
                slot = in_flight.get(job.id)
                if slot is None or slot.reported:
                    continue
                if slot.job.attempts == job.attempts:
                    again.add(job.id)
                else:
                    obsolete.append(job.id)
        again |= self.acknowledger.holds(jobs)
        for job_id in obsolete:
            self.runner.abandon(job_id, "claimed again on a later attempt")
        for job in jobs:
            if job.id in again:
                log.info("job %s attempt %s was claimed again while this worker still held it; "
                         "the copy held settles it", job.id, job.attempts)
                self.counters.count("claimed_again")
            else:
                self.runner.dispatch(job)
        self.positions.dispatched(ids)

    def limit(self) -> int:
        """Claims in flight at once: one per spare pooled connection, at most
        ``claims_in_flight``, and at most what the source allows."""
        limit = max(1, min(self.settings.claims_in_flight, self.settings.pool_size - 1))
        own = self.source.max_claims_in_flight
        return limit if own is None else max(1, min(limit, own))

    # ------------------------------------------------------------ the loop
    def run(self, burst: bool) -> None:
        """Claim until the worker stops (``burst``: until no job is left)."""
        claimers = [threading.Thread(target=self._claimer, args=(burst,), name=f"pgq-claim-{i}", daemon=True)
                    for i in range(self.limit())]
        for thread in claimers:
            thread.start()
        with self._lock:
            # A burst run ends when Postgres says nothing is left (``_burst_wait``):
            # every claim of it goes through the loop, so that none is out at that moment.
            self._open = not burst
        try:
            self._loop(burst, len(claimers))
        finally:
            with self._lock:
                self._open = False
            for _ in claimers:
                self._requests.put(None)
            for thread in claimers:
                thread.join()  # a claim in flight ends (or fails) within the statement timeout
            self._await_listener_claim()

    def _await_listener_claim(self) -> None:
        """Wait until a claim the LISTEN thread started has delivered its jobs (a claim
        ends, or fails, within the statement timeout), so that shutdown finds them."""
        # Counted in waits rather than read from ``self.clock``: a test's manual clock
        # does not move while this waits.
        for _ in range(int((self.settings.statement_timeout_seconds + 5.0) / 0.05)):
            with self._lock:
                if self._out == 0:
                    return
            self._wake.wait(0.05)
            self._wake.clear()
        log.warning("a claim of the LISTEN thread did not come back before shutdown")

    def _loop(self, burst: bool, limit: int) -> None:
        backoff = 0.05
        while not self._stopping.is_set():
            # Clear before looking, so a wake-up that arrives meanwhile is kept.
            self._wake.clear()
            self.runner.enforce_deadlines()
            with self._lock:
                out, error, looked_empty, last_empty = self._out, self._error, self._looked_empty, self._last_empty
                self._error = None
            if error is not None:
                self.counters.errors += 1
                log.warning("claim failed (%s); retrying in %.2f s", error, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if looked_empty:
                if self._after_empty(burst, out, last_empty):
                    return
                continue
            want = 0 if out >= limit else self._size()
            if want == 0:
                if out >= limit:
                    self.runner.refill_at = -1  # a returning claim wakes us
                self.wait(self.settings.poll_interval_seconds)
                continue
            if self._stopping.is_set():
                break
            backoff = 0.05
            with self._lock:
                self._out += 1
                self._claiming += want
                self._announced = False
            # Outside the runner's lock: a delivery holds the order's lock, then takes it.
            self._requests.put((self._order.ticket(), want))

    def _after_empty(self, burst: bool, out: int, last_empty: bool) -> bool:
        """The queue looked empty: wait for work. True when a burst run is done."""
        if out:
            # Let the claims still in flight come back first.
            self.runner.refill_at = -1
            self.wait(self.settings.poll_interval_seconds)
            return False
        with self._lock:
            self._looked_empty = False
            announced = self._announced
        if announced:
            return False  # look again: the empty claims may have started before the new work was committed
        if burst and last_empty and self.runner.count() == 0:
            # Nothing held and the last claim found nothing; Postgres decides whether
            # the run is done (a claim from Redis may come back empty with jobs left).
            timeout = self._burst_wait()
            if timeout is None:
                return True
            if timeout == 0:
                return False
            self.runner.refill_at = 0
        else:
            # A finished job frees a slot, not work, so only NOTIFY, the poll (or, in
            # burst mode, the last job) wakes us.
            self.runner.refill_at = 0 if burst else -1
            if burst and self.runner.count() == 0:
                # The last job finished before we asked to hear of it (while another
                # claim was still out): look again now, not at the poll.
                return False
            timeout = self.source.idle_wait(self.settings.poll_interval_seconds)
        self._idle.set()
        try:
            self.wait(timeout)
        finally:
            self._idle.clear()
        return False

    def claim_or_announce(self) -> None:
        """A NOTIFY for this worker's queues, on the LISTEN thread: claim here when the worker is idle.

        An idle worker's claim loop waits for a wake-up and would hand the claim
        to a claimer thread, which hands the jobs to a runner thread: three thread
        hand-offs between the notification and the handler, each a scheduling
        delay on a busy machine. Claiming on the LISTEN thread itself leaves one
        (to the runner). Only when nothing is claimed or being claimed and the
        loop waits for work (``idle``); otherwise the loop is told
        (``work_announced``) and claims as usual. Counts as one of the claims in
        flight until its jobs are dispatched, so the loop does not end a run or
        claim past ``claims_in_flight`` meanwhile.
        """
        if not self._idle.is_set() or self.acknowledger.behind():
            self.work_announced()
            return
        with self._lock:
            want = 0
            if self._open and self._out == 0 and self._idle.is_set() and not self._stopping.is_set():
                want = size_claim(concurrency=self.concurrency, batch_size=self.current_batch(),
                                  rate=self._rate.rate, in_flight=len(self.runner.in_flight),
                                  claiming=self._claiming).want
            if want > 0:
                self._out += 1
                self._claiming += want
        if want <= 0:
            self.work_announced()
            return
        # The ticket outside the runner's lock: a delivery holds the order's lock, then takes it.
        self._run_claim(self._order.ticket(), want, thorough=False)

    def work_announced(self) -> None:
        """New work may be there (a NOTIFY for these queues, or LISTEN reconnected): claim.

        Unlike a plain wake-up, this survives a claim already in flight that comes
        back empty: the loop then claims once more instead of going idle (the job
        may have been committed after that claim took its snapshot)."""
        with self._lock:
            self._announced = True
        self._wake.set()

    def _burst_wait(self) -> float | None:
        """How long a burst run with nothing left in hand waits before it claims again
        (0: claim now), or None when it is done.

        Done means: every outcome is written (a failure may become a retry, a
        completion may release a waiting job), and no queued or retrying job of
        the worker's queues is due now or within ``burst_wait_seconds``.
        """
        poll = self.settings.poll_interval_seconds
        if not self.acknowledger.wait_settled(min(poll, 0.2)):
            return 0.0  # still writing (or the database is away): look again
        try:
            due = self._due_in() if self._due_in is not None else None
        except Exception as exc:  # not a reason to stop early: look again after the poll
            self.counters.errors += 1
            log.warning("burst: could not ask for the next due job (%s); retrying in %.2f s", exc, poll)
            return poll
        if due is None or due > self.settings.burst_wait_seconds:
            if due is not None:
                log.info("burst: the next job is due in %.1f s, after burst_wait_seconds; done", due)
            return None
        if due > 0:
            return min(due, poll)
        # Due now, yet the claim found nothing (another worker's claim holds it, or
        # Redis offered stale ids): claim again at once, then back off a little.
        if self.runner.finished != self._burst_seen:
            self._burst_seen, self._burst_misses = self.runner.finished, 0
        self._burst_misses += 1
        return 0.0 if self._burst_misses == 1 else min(poll, 0.005 * 2 ** min(self._burst_misses, 10))

    def _size(self) -> int:
        """How many jobs to claim now (0: wait for a slot to free); see ``prefetch``."""
        rate = self._rate.update(self.clock.monotonic(), self.runner.finished)
        if self.acknowledger.behind():
            self.runner.refill_at = ALWAYS
            return 0
        with self._lock:
            size = size_claim(concurrency=self.concurrency, batch_size=self.current_batch(), rate=rate,
                              in_flight=len(self.runner.in_flight), claiming=self._claiming)
        self.runner.refill_at = size.refill_at
        return size.want

    def current_batch(self) -> int:
        """The claim batch now: ``batch_size``, shrunk by a low health score (``claim_batch``)."""
        return claim_batch(self.batch_size, None if self.health is None else self.health.latest)

    def wait(self, timeout: float) -> None:
        """Wait for a wake-up, at most ``timeout`` seconds and not past the nearest job deadline."""
        nearest = self.runner.nearest_deadline()
        if nearest is not None:
            timeout = max(0.0, min(timeout, nearest - self.clock.monotonic()))
        self._wake.wait(timeout)

    # ------------------------------------------------------------ claimer threads
    def _claimer(self, burst: bool) -> None:
        """Run the claims the loop asks for; their jobs are dispatched in request order."""
        while True:
            request = self._requests.get()
            if request is None:
                return
            ticket, want = request
            self._run_claim(ticket, want, thorough=burst)

    def _run_claim(self, ticket: int, want: int, *, thorough: bool) -> None:
        """Run one claim counted in ``_out``; its jobs are dispatched in ticket order."""
        jobs: list[Job] = []
        error: Exception | None = None
        try:
            if not self._stopping.is_set():
                jobs = self.claim(want, thorough=thorough)
        except PgqError as exc:
            error = exc
        except Exception as exc:  # a bug: keep the worker alive, report it like a failed claim
            log.exception("claim failed unexpectedly")
            error = exc
        self._order.done(ticket, (want, jobs, error), self._deliver)

    def _deliver(self, result: tuple[int, list[Job], Exception | None]) -> None:
        """Dispatch a claim's jobs, account for the claim, wake the loop."""
        want, jobs, error = result
        if jobs:
            self.hand_over(jobs)
        with self._lock:
            self._out -= 1
            self._claiming -= want
            if error is not None:
                self._error = error
            else:
                self._last_empty = not jobs
                if len(jobs) < want:
                    self._looked_empty = True
        self._wake.set()
