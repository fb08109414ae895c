"""The worker: registration, heartbeats, the claim loop, running handlers
concurrently, batched acknowledgements and graceful shutdown.

One process holds a bounded pool (``Settings.pool_size`` connections) plus one
LISTEN connection, whatever its concurrency. Jobs are claimed in batches into
a small local buffer that ``concurrency`` runner threads (or the event loop,
for ``async def`` handlers) take from; the buffer holds only what the worker
will start within about 50 ms at its measured rate (at most three batches),
so fast jobs are claimed 100 at a time and slow jobs are not hoarded. The
claim loop decides when and how much to claim; claimer threads run the claims,
up to ``Settings.claims_in_flight`` at once on their own pooled connections,
so a busy worker runs buffered jobs while its next claim is in the database.
No transaction is open while a handler runs. Outcomes go to an acknowledger thread that writes completions in
batches (``complete_jobs``) and failures one by one (``fail_job``). Deciding
what a failure means is the database's job.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue as queue_module
import signal
import socket
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

from pgq.clock import Clock, SystemClock
from pgq.errors import InvalidTransition, PgqError, ValidationError
from pgq.executor import Completed, Failed, JobContext, Outcome, run_async, run_sync, timed_out, unknown_task
from pgq.job import Job, validate_queue_name
from pgq.maintenance import Maintenance
from pgq.notify import Listener

if TYPE_CHECKING:
    from pgq.queue import Queue
    from pgq.redis_mirror import WorkerMirror

log = logging.getLogger("pgq.worker")

_ALWAYS = 1 << 62  # a _refill_at level every in-flight count is below


def _outcome_of(future: Any) -> Outcome:
    exc = future.exception()
    return Failed(type(exc).__name__, str(exc)) if exc is not None else future.result()


@dataclass
class _Slot:
    """One claimed job inside this worker."""

    job: Job
    ctx: JobContext
    deadline: float | None = None
    # True once a runner took it (a buffered job that never started can be released).
    started: bool = False
    # True once an outcome was sent (or must not be: cancelled / rescued).
    reported: bool = False


@dataclass
class WorkerCounters:
    claimed: int = 0
    completed: int = 0
    failed: int = 0
    stale_reports: int = 0
    released: int = 0
    claim_round_trips: int = 0
    ack_round_trips: int = 0
    errors: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Worker:
    """Runs the jobs of ``queue``'s tasks from ``queues``.

    Args:
        queue: the ``pgq.Queue`` whose tasks this worker runs.
        queues: queue names to claim from; default: the queues of the registered tasks.
        concurrency: jobs run at once (sync handlers in a thread pool of this size,
            async handlers on one event loop).
        batch_size: most jobs claimed per round trip (``Settings.claim_batch_size``).
        install_signal_handlers: SIGTERM/SIGINT drain gracefully; a second signal stops now.
        run_maintenance: take part in the leader election for maintenance.
    """

    def __init__(
        self,
        queue: Queue,
        queues: Sequence[str] | None = None,
        concurrency: int = 10,
        *,
        batch_size: int | None = None,
        worker_id: uuid.UUID | None = None,
        install_signal_handlers: bool = True,
        run_maintenance: bool = True,
        clock: Clock | None = None,
    ) -> None:
        from pgq.queue import Queue

        if not isinstance(queue, Queue):
            raise ValidationError(f"queue must be a pgq.Queue, got {type(queue).__name__}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 10_000:
            raise ValidationError(f"concurrency must be a whole number from 1 to 10000, got {concurrency!r}")
        if queues is None:
            queues = sorted({t.queue for t in queue.tasks.values()}) or [queue.settings.default_queue]
        if isinstance(queues, (str, bytes)) or not isinstance(queues, Iterable) or not queues:
            raise ValidationError(f"queues must be a non-empty list of queue names, got {queues!r}")
        self.queues = list(dict.fromkeys(validate_queue_name(q) for q in queues))
        batch = queue.settings.claim_batch_size if batch_size is None else batch_size
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValidationError(f"batch_size must be a whole number >= 1, got {batch!r}")
        if worker_id is not None and not isinstance(worker_id, uuid.UUID):
            raise ValidationError(f"worker_id must be a uuid.UUID, got {worker_id!r}")
        self.queue = queue
        self.settings = queue.settings
        self.queries = queue.queries
        self.concurrency = concurrency
        self.batch_size = batch
        self.id = worker_id or uuid.uuid4()
        self.install_signal_handlers = install_signal_handlers
        self.run_maintenance = run_maintenance
        self.clock = clock or SystemClock()
        self.counters = WorkerCounters()

        self._lock = threading.Lock()
        # Claimed jobs not finished yet: buffered (waiting for a runner) and running.
        self._in_flight: dict[int, _Slot] = {}
        self._ready: queue_module.SimpleQueue[_Slot | None] = queue_module.SimpleQueue()
        self._runners: list[threading.Thread] = []
        # Completions per second (EWMA), to size the prefetch buffer.
        self._rate = 0.0
        self._rate_mark = (0.0, 0)
        self._finished = 0
        self._acks: queue_module.SimpleQueue[tuple[Job, Outcome]] = queue_module.SimpleQueue()
        self._wake = threading.Event()
        # A finished job wakes the claim loop only when the number of jobs in
        # flight falls to this level (set by the loop before it waits): at 20,000
        # jobs/s, waking it on every completion cost more GIL time than claiming.
        self._refill_at = _ALWAYS
        # Set when claiming paused because outcomes were not written yet; the
        # acknowledger wakes the loop after its next flush.
        self._ack_blocked = False
        # Claims in flight (``_loop_forever`` asks, ``_claimer`` threads run them).
        self._claim_requests: queue_module.SimpleQueue[int | None] = queue_module.SimpleQueue()
        self._claims_out = 0
        self._claiming = 0  # jobs asked for by the claims in flight
        self._claim_error: Exception | None = None
        self._looked_empty = False  # a claim returned fewer jobs than asked for
        self._last_claim_empty = False  # the latest claim to return found no job at all
        self._stopping = threading.Event()
        self._force = threading.Event()
        self._stop_background = threading.Event()
        self._registered = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._listener: Listener | None = None
        self._background: list[threading.Thread] = []
        self.maintenance: Maintenance | None = None
        # Redis accelerator (redis_url set): ids come from Redis, claims stay in Postgres.
        self._mirror: WorkerMirror | None = None
        if queue.mirror is not None:
            from pgq.redis_mirror import WorkerMirror

            self._mirror = WorkerMirror(queue.mirror, self.id, self.queues, self.counters)
        # Set while the claim loop waits for work: the Redis waiter may then take wake-ups.
        self._idle = threading.Event()
        # Set by a NOTIFY: the mirror reconciler (if this worker leads it) runs a pass now.
        self._mirror_poke = threading.Event()

    def __repr__(self) -> str:
        return f"<pgq.Worker {self.id} queues={self.queues} concurrency={self.concurrency}>"

    # ------------------------------------------------------------ public
    def run(self, *, burst: bool = False) -> None:
        """Run until stopped (SIGTERM/SIGINT or ``stop()``); with ``burst``, until no job is left.

        On exit every claimed job has been reported, released or (after the grace
        period) interrupted, and the worker is deregistered.
        """
        restore = self._install_signals() if self.install_signal_handlers else None
        try:
            self._start_background()
            self._loop_forever(burst)
        finally:
            try:
                self._shutdown()
            finally:
                if restore:
                    restore()

    def run_once(self, max_jobs: int | None = None) -> int:
        """Claim one batch, run it to the end, write the outcomes; return how many ran.

        For tests and embedding: no background threads, no waiting for work.
        """
        self._register()
        self._start_runners()
        self._refill_at = _ALWAYS
        jobs = self._claim(min(max_jobs or self.batch_size, self.concurrency), thorough=True)
        for job in jobs:
            self._dispatch(job)
        while True:
            self._enforce_deadlines()
            with self._lock:
                pending = [s for s in self._in_flight.values() if not s.reported]
            if not pending:
                break
            nearest = min((s.deadline for s in pending if s.deadline is not None), default=None)
            timeout = 0.05 if nearest is None else max(0.0, min(0.05, nearest - self.clock.monotonic()))
            self._wake.wait(timeout)
            self._wake.clear()
        self._flush(self._drain_acks())
        return len(jobs)

    def stop(self, *, now: bool = False) -> None:
        """Stop claiming; let running jobs finish (``now``: skip the grace period)."""
        self._stopping.set()
        if now:
            self._force.set()
        self._wake.set()

    def heartbeat(self) -> None:
        """Send a heartbeat; stop handlers of jobs this worker no longer owns."""
        with self._lock:
            running = [job_id for job_id, s in self._in_flight.items() if not s.reported]
        with self.queue.pool.connection() as conn:
            beat = self.queries.heartbeat_worker(conn, self.id, len(running), running)
        if beat.previous_status == "stale":
            log.warning("worker %s had been marked stale; its jobs were rescued", self.id)
        for job_id in beat.lost_job_ids:
            self._abandon(job_id, "no longer owned (cancelled, rescued or timed out)")
        if self._mirror is not None:
            self._mirror.heartbeat(len(running))

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)

    # ------------------------------------------------------------ claim loop
    def _loop_forever(self, burst: bool) -> None:
        """Decide when and how much to claim; claimer threads run the claims.

        Up to ``claims_in_flight`` claims run at once, each on its own pooled
        connection: while one waits for the database, the jobs of another are
        dispatched and run, so a busy worker never idles between round trips.
        """
        self._register()
        self._start_runners()
        limit = self._claim_limit()
        claimers = [threading.Thread(target=self._claimer, args=(burst,), name=f"pgq-claim-{i}", daemon=True)
                    for i in range(limit)]
        for thread in claimers:
            thread.start()
        backoff = 0.05
        try:
            while not self._stopping.is_set():
                # Clear before looking, so a wake-up that arrives meanwhile is kept.
                self._wake.clear()
                self._enforce_deadlines()
                with self._lock:
                    out, error, looked_empty, last_empty = (
                        self._claims_out, self._claim_error, self._looked_empty, self._last_claim_empty)
                    self._claim_error = None
                if error is not None:
                    self.counters.errors += 1
                    log.warning("claim failed (%s); retrying in %.2f s", error, backoff)
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if looked_empty:
                    if out:
                        # Let the claims still in flight come back first.
                        self._refill_at = -1
                        self._wait(self.settings.poll_interval_seconds)
                        continue
                    with self._lock:
                        self._looked_empty = False
                    if burst and last_empty and self.in_flight == 0:
                        return
                    # The queue looked empty: a finished job frees a slot, not work, so
                    # only NOTIFY, the poll (or, in burst mode, the last job) wakes us.
                    self._refill_at = 0 if burst else -1
                    if burst and self.in_flight == 0:
                        # The last job finished before we asked to hear of it (while
                        # another claim was still out): look again now, not at the poll.
                        continue
                    self._idle.set()
                    try:
                        self._wait(self._idle_wait())
                    finally:
                        self._idle.clear()
                    continue
                want = 0 if out >= limit else self._claim_size()
                if want == 0:
                    if out >= limit:
                        self._refill_at = -1  # a returning claim wakes us
                    self._wait(self.settings.poll_interval_seconds)
                    continue
                if self._stopping.is_set():
                    break
                backoff = 0.05
                with self._lock:
                    self._claims_out += 1
                    self._claiming += want
                self._claim_requests.put(want)
        finally:
            for _ in claimers:
                self._claim_requests.put(None)
            for thread in claimers:
                thread.join()  # a claim in flight ends (or fails) within the statement timeout

    def _claim_limit(self) -> int:
        """Claims in flight at once: one per spare pooled connection, at most
        ``claims_in_flight``; one in Redis mode (a pop records one batch per worker)."""
        if self._mirror is not None:
            return 1
        return max(1, min(self.settings.claims_in_flight, self.settings.pool_size - 1))

    def _claimer(self, burst: bool) -> None:
        """Run the claims the loop asks for, dispatch their jobs, wake the loop."""
        while True:
            want = self._claim_requests.get()
            if want is None:
                return
            jobs: list[Job] = []
            error: Exception | None = None
            try:
                if not self._stopping.is_set():
                    jobs = self._claim(want, thorough=burst)
            except PgqError as exc:
                error = exc
            except Exception as exc:  # a bug: keep the worker alive, report it like a failed claim
                log.exception("claim failed unexpectedly")
                error = exc
            for job in jobs:
                self._dispatch(job)
            with self._lock:
                self._claims_out -= 1
                self._claiming -= want
                if error is not None:
                    self._claim_error = error
                else:
                    self._last_claim_empty = not jobs
                    if len(jobs) < want:
                        self._looked_empty = True
            self._wake.set()

    def _claim_size(self) -> int:
        """How many jobs to claim now (0: wait for a slot to free).

        Capacity is ``concurrency`` running jobs plus a prefetch buffer sized to
        what this worker starts in about 50 ms at its measured completion rate
        (at most three batches). Jobs already asked for by claims in flight
        count as held. Small top-ups are skipped while the runners are still
        busy, so claims come in batches rather than one job at a time.
        """
        now = self.clock.monotonic()
        mark_time, mark_count = self._rate_mark
        if now - mark_time >= 0.05:
            instant = (self._finished - mark_count) / (now - mark_time) if mark_time else 0.0
            self._rate = instant if self._rate == 0.0 else 0.5 * self._rate + 0.5 * instant
            self._rate_mark = (now, self._finished)
        prefetch = min(3 * self.batch_size, int(self._rate * 0.05))
        # Finished jobs whose outcome is not written yet are still running in the
        # database: do not claim more while the acknowledger is behind.
        if self._acks.qsize() > 2 * self.settings.ack_batch_size:
            self._ack_blocked = True
            self._refill_at = _ALWAYS
            return 0
        with self._lock:
            held = len(self._in_flight) + self._claiming
        free = self.concurrency + prefetch - held
        top_up = min(self.batch_size, max(1, prefetch // 2))
        if free <= 0 or (held >= self.concurrency and free < top_up):
            # Wait until enough jobs finished for a worthwhile claim.
            self._refill_at = self.concurrency + prefetch - top_up - (held - len(self._in_flight))
            return 0
        self._refill_at = _ALWAYS
        return min(free, self.batch_size)

    def _idle_wait(self) -> float:
        """How long to wait for work: the poll interval, or less when a delayed
        or retrying job falls due sooner (NOTIFY only covers jobs due at once)."""
        poll = self.settings.poll_interval_seconds
        if self._mirror is not None and self._mirror.trusted:
            # Redis wakes this worker (push tokens); due retries reach Redis through
            # the reconciler. Postgres is asked only at the safety-net poll.
            return min(poll, self._mirror.seconds_to_poll())
        try:
            with self.queue.pool.connection() as conn:
                due = self.queries.seconds_until_next_due(conn, self.queues)
        except Exception as exc:  # only an optimisation: fall back to polling
            log.debug("next-due lookup failed: %s", exc)
            return poll
        return poll if due is None else min(poll, due)

    def _wait(self, timeout: float) -> None:
        with self._lock:
            deadlines = [s.deadline for s in self._in_flight.values() if s.deadline is not None and not s.reported]
        if deadlines:
            timeout = max(0.0, min(timeout, min(deadlines) - self.clock.monotonic()))
        self._wake.wait(timeout)

    def _claim(self, n: int, *, thorough: bool = False) -> list[Job]:
        """Claim up to ``n`` jobs: from Redis ids when the accelerator answers, else
        (or when Redis is empty and a safety-net poll is due, or ``thorough``) from Postgres."""
        from pgq.db import translated

        with translated(self.settings.database_url):
            try:
                jobs = None if self._mirror is None else self._mirror.claim(self.queue.pool, n, thorough=thorough)
                if jobs is None:
                    with self.queue.pool.connection() as conn:
                        with self._lock:
                            self.counters.claim_round_trips += 1
                        jobs = self.queries.get_runnable_jobs(conn, self.queues, self.id, n)
                    if self._mirror is not None:
                        self._mirror.claimed_from_postgres(jobs)
            except InvalidTransition:
                # Marked stale (e.g. heartbeats could not reach the database):
                # its jobs were rescued; register again and carry on.
                log.warning("worker %s was not active; registering again", self.id)
                self._registered = False
                self._register()
                return []
        with self._lock:
            self.counters.claimed += len(jobs)
        return jobs

    def _dispatch(self, job: Job) -> None:
        task = self.queue.tasks.get(job.task)
        slot = _Slot(job, JobContext(job))
        with self._lock:
            self._in_flight[job.id] = slot
        if task is None:
            slot.started = True
            self._finish(slot, unknown_task(job))
        elif task.is_async:
            slot.started = True
            future = asyncio.run_coroutine_threadsafe(
                run_async(task.fn, slot.ctx, job.timeout_seconds), self._event_loop())
            future.add_done_callback(lambda f: self._finish(slot, _outcome_of(f)))
        else:
            self._ready.put(slot)

    def _start_runners(self) -> None:
        while len(self._runners) < self.concurrency:
            thread = threading.Thread(target=self._runner, name=f"pgq-job-{len(self._runners)}", daemon=True)
            thread.start()
            self._runners.append(thread)

    def _runner(self) -> None:
        """One of ``concurrency`` threads running sync handlers from the buffer."""
        while True:
            slot = self._ready.get()
            if slot is None:
                return
            with self._lock:
                if slot.reported or slot.started:
                    # Cancelled or rescued while buffered, or released at shutdown.
                    skip = True
                elif self._stopping.is_set():
                    # Stopping: a buffered job is not started; shutdown releases it.
                    continue
                else:
                    skip = False
                    slot.started = True
                    timeout = slot.job.timeout_seconds
                    if timeout is not None:
                        slot.deadline = self.clock.monotonic() + timeout
            if skip:
                self._finish(slot, None)
                continue
            task = self.queue.tasks[slot.job.task]
            self._finish(slot, run_sync(task.fn, slot.ctx))

    def _finish(self, slot: _Slot, outcome: Outcome | None) -> None:
        with self._lock:
            if self._in_flight.get(slot.job.id) is slot:
                del self._in_flight[slot.job.id]
            report = not slot.reported and outcome is not None
            slot.reported = True
            self._finished += 1
            wake = len(self._in_flight) <= self._refill_at or self._stopping.is_set()
        if report:
            assert outcome is not None
            self._acks.put((slot.job, outcome))
        elif self._mirror is not None:
            self._mirror.finished([slot.job.id])  # cancelled or rescued: no outcome to write
        if wake:
            self._wake.set()

    def _enforce_deadlines(self) -> None:
        now = self.clock.monotonic()
        expired: list[_Slot] = []
        with self._lock:
            for slot in self._in_flight.values():
                if slot.deadline is not None and not slot.reported and now >= slot.deadline:
                    slot.reported = True
                    expired.append(slot)
        for slot in expired:
            # A thread cannot be killed: the job is failed now and the handler is
            # asked to stop; its slot frees when the function returns.
            log.warning("job %s exceeded its timeout of %s s", slot.job.id, slot.job.timeout_seconds)
            slot.ctx.cancel()
            self._acks.put((slot.job, timed_out(slot.job.timeout_seconds)))

    def _take_unstarted(self) -> list[_Slot]:
        """Remove the buffered, never-started jobs from this worker (to release them)."""
        taken = []
        with self._lock:
            for slot in list(self._in_flight.values()):
                if not slot.started and not slot.reported:
                    slot.started = True  # a runner that still dequeues it skips it
                    slot.reported = True
                    del self._in_flight[slot.job.id]
                    taken.append(slot)
        return taken

    def _abandon(self, job_id: int, why: str) -> None:
        with self._lock:
            slot = self._in_flight.get(job_id)
            if slot is None or slot.reported:
                return
            slot.reported = True
        log.info("job %s: %s; stopping its handler", job_id, why)
        slot.ctx.cancel()

    # ------------------------------------------------------------ acknowledgements
    def _drain_acks(self) -> list[tuple[Job, Outcome]]:
        items = []
        while True:
            try:
                items.append(self._acks.get_nowait())
            except queue_module.Empty:
                return items

    def _ack_loop(self) -> None:
        interval = self.settings.ack_interval_seconds
        limit = self.settings.ack_batch_size
        while True:
            try:
                first = self._acks.get(timeout=0.1)
            except queue_module.Empty:
                if self._stop_background.is_set():
                    return
                continue
            batch = [first]
            deadline = self.clock.monotonic() + interval
            while len(batch) < limit:
                remaining = deadline - self.clock.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(self._acks.get(timeout=remaining))
                except queue_module.Empty:
                    break
            self._flush(batch)
            if self._ack_blocked:
                self._ack_blocked = False
                self._wake.set()

    def _flush(self, batch: list[tuple[Job, Outcome]]) -> None:
        """Write outcomes; retry on database errors until written (or forced to stop).

        An outcome the database rejects for good (bad data, not a dropped
        connection) is replaced by a plain failure naming the rejection, so one
        bad report never blocks the others nor leaves its job running.
        """
        from pgq.db import translated

        if self._mirror is not None and batch:
            # Leave the processing set first: once an outcome is written the id must
            # not count as held (a retry due at once is then mirrored by the reconciler).
            self._mirror.finished([job.id for job, _ in batch])
        completions = [(job, o) for job, o in batch if isinstance(o, Completed)]
        failures = [(job, o) for job, o in batch if isinstance(o, Failed)]
        backoff = 0.05
        tries = 0
        while completions or failures:
            try:
                with translated(self.settings.database_url), self.queue.pool.connection() as conn:
                    if completions:
                        try:
                            self._complete(conn, completions)
                        except ValidationError as exc:
                            if len(completions) > 1:
                                # Find the culprit: write the batch one by one.
                                for item in completions:
                                    self._flush([item])
                            else:
                                job = completions[0][0]
                                log.error("the database rejected the result of job %s: %s", job.id, exc)
                                failures.append((job, Failed("ResultRejected", f"result not stored: {exc}",
                                                             fatal=True)))
                        completions = []
                    while failures:
                        job, o = failures[0]
                        assert isinstance(o, Failed)
                        try:
                            ok = self._fail(conn, job, o)
                        except ValidationError as exc:
                            log.error("the database rejected the failure report of job %s: %s", job.id, exc)
                            ok = self._fail(conn, job, Failed("OutcomeRejected", f"failure report rejected: {exc}"))
                        if ok:
                            self.counters.failed += 1
                            # The job may be retrying, due soon: a delayed retry sends no NOTIFY,
                            # and the claim loop chose its idle wait before this was written.
                            # Wake it so that it sees the new run_at (``_idle_wait``).
                            self._wake.set()
                        else:
                            self.counters.stale_reports += 1
                            log.info("failure report for job %s attempt %s was stale; discarded", job.id, job.attempts)
                        failures.pop(0)
            except Exception as exc:  # a lost ack is recovered by rescue; keep trying meanwhile
                tries += 1
                self.counters.errors += 1
                if self._force.is_set() and tries >= 3:
                    log.error("giving up on %d outcome(s) after %d tries (%s); the jobs will be rescued",
                              len(completions) + len(failures), tries, exc)
                    return
                log.warning("writing outcomes failed (%s); retrying in %.2f s", exc, backoff)
                self._force.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _complete(self, conn: Any, completions: list[tuple[Job, Completed]]) -> None:
        self.counters.ack_round_trips += 1
        done = self.queries.complete_jobs(
            conn, self.id, [j.id for j, _ in completions], [j.attempts for j, _ in completions],
            [o.result_json for _, o in completions],
        )
        self.counters.completed += len(done)
        self.counters.stale_reports += len(completions) - len(done)
        for job, _ in completions:
            if job.id not in done:
                log.info("completion of job %s attempt %s was stale (rescued, cancelled or timed out "
                         "meanwhile); discarded", job.id, job.attempts)

    def _fail(self, conn: Any, job: Job, o: Failed) -> bool:
        self.counters.ack_round_trips += 1
        return self.queries.fail_job(conn, job.id, self.id, job.attempts, o.error_type, o.message,
                                     o.traceback, o.retry_delay, o.fatal, o.outcome)

    # ------------------------------------------------------------ background
    def _register(self) -> None:
        if self._registered:
            return
        metadata = json.dumps({"concurrency": self.concurrency, "batch_size": self.batch_size,
                               "tasks": sorted(self.queue.tasks)})
        from pgq.db import translated

        with translated(self.settings.database_url), self.queue.pool.connection() as conn:
            self.queries.register_worker(conn, self.id, socket.gethostname(), os.getpid(), self.queues,
                                         self.concurrency, metadata)
        self._registered = True
        if self._mirror is not None:
            self._mirror.heartbeat(0)
        log.info("worker %s registered (queues %s, concurrency %d)", self.id, self.queues, self.concurrency)

    def _start_background(self) -> None:
        self._register()
        if self.run_maintenance:
            self.maintenance = Maintenance(self.settings, self.queue.pool, self.queries, mirror=self.queue.mirror)
            if self.maintenance.mirror is not None:
                self._spawn(self._mirror_loop, "pgq-mirror")
        if self._mirror is not None:
            self._spawn(self._redis_waiter, "pgq-redis-wait")
        self._spawn(self._ack_loop, "pgq-ack")
        self._spawn(self._heartbeat_loop, "pgq-heartbeat")
        if self.settings.listen:
            url = self.settings.listen_database_url or self.settings.require_database_url()
            self._listener = Listener(
                url,
                [self.queries.channel_job_available, self.queries.channel_job_cancelled],
                self._on_notify,
                self._wake.set,
            )
            self._listener.start()

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._background.append(thread)

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel == self.queries.channel_job_available:
            if self._mirror is not None and self._mirror.trusted:
                # Redis wakes this worker; a NOTIFY only tells the reconciler to
                # look (jobs enqueued without a push: transactional, SQL, other languages).
                if self.maintenance is not None and self.maintenance.mirror is not None \
                        and self.maintenance.mirror.is_leader:
                    self._mirror_poke.set()
            elif payload in self.queues:
                self._wake.set()
        elif channel == self.queries.channel_job_cancelled:
            try:
                job_id = int(payload)
            except ValueError:
                return
            self._abandon(job_id, "cancelled")

    def _heartbeat_loop(self) -> None:
        beat_every = self.settings.heartbeat_interval_seconds
        maintain_every = self.settings.maintenance_interval_seconds
        next_beat = self.clock.monotonic() + beat_every
        next_maintenance = self.clock.monotonic()
        while not self._stop_background.is_set():
            now = self.clock.monotonic()
            try:
                if now >= next_beat:
                    next_beat = now + beat_every
                    self.heartbeat()
                if self.maintenance is not None and now >= next_maintenance:
                    next_maintenance = now + maintain_every
                    self.maintenance.run_once()
            except Exception as exc:  # the loop must survive database outages
                self.counters.errors += 1
                log.warning("heartbeat/maintenance failed: %s", exc)
            wait = min(next_beat, next_maintenance if self.maintenance else next_beat) - self.clock.monotonic()
            self._stop_background.wait(max(0.01, wait))

    def _redis_waiter(self) -> None:
        """Redis mode: while the claim loop is idle, block on the queues' wake lists
        (Redis, not Postgres) and wake the loop when work is pushed."""
        mirror = self._mirror
        assert mirror is not None
        while not self._stop_background.is_set():
            if not self._idle.wait(0.2):
                continue
            woken = mirror.wait_for_work()
            if woken:
                self._wake.set()
            elif woken is None:  # Redis unavailable: the loop polls Postgres meanwhile
                self._stop_background.wait(0.5)

    def _mirror_loop(self) -> None:
        """Redis mode: take part in the reconciler lease; the leader reconciles the mirror
        every ``redis_reconcile_interval_seconds``, and soon after a NOTIFY."""
        assert self.maintenance is not None and self.maintenance.mirror is not None
        reconciler = self.maintenance.mirror
        interval = self.settings.redis_reconcile_interval_seconds
        next_tick = 0.0
        while not self._stop_background.is_set():
            # A pass on the clock does everything; one triggered by a NOTIFY in
            # between only mirrors what became runnable (``quick``).
            quick = self.clock.monotonic() < next_tick
            if not quick:
                next_tick = self.clock.monotonic() + interval
            try:
                if reconciler.lead(str(self.id)):
                    reconciler.run_once(quick=quick)
            except Exception as exc:  # the loop must survive Redis and database outages
                self.counters.errors += 1
                log.warning("mirror reconciliation failed: %s", exc)
            # At most one NOTIFY-triggered pass per 20 ms, however many notifications arrive.
            self._stop_background.wait(0.02)
            self._mirror_poke.wait(max(0.0, next_tick - self.clock.monotonic()))
            self._mirror_poke.clear()

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="pgq-async", daemon=True)
                thread.start()
                self._loop, self._loop_thread = loop, thread
            return self._loop

    # ------------------------------------------------------------ shutdown
    def _install_signals(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def handle(signum: int, frame: FrameType | None) -> None:
            if self._stopping.is_set():
                log.warning("second signal: stopping now")
                self.stop(now=True)
            else:
                log.info("signal %s: finishing running jobs (send again to stop now)", signum)
                self.stop()

        for sig in previous:
            signal.signal(sig, handle)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def _shutdown(self) -> None:
        self._stopping.set()
        grace_end = self.clock.monotonic() + self.settings.shutdown_grace_seconds
        while not self._force.is_set():
            self._enforce_deadlines()
            with self._lock:
                running = [s for s in self._in_flight.values() if s.started and not s.reported]
            if not running or self.clock.monotonic() >= grace_end:
                break
            self._wake.wait(0.05)
            self._wake.clear()
        # Buffered jobs no runner started (none will now) go back to the queue untouched.
        unstarted = self._take_unstarted()
        for _ in self._runners:
            self._ready.put(None)
        self._stop_background.set()
        self._mirror_poke.set()  # the mirror loop may be waiting for its next tick
        if self._mirror is not None:
            self._mirror.interrupt_wait()  # the Redis waiter may be blocked in BLPOP
        for thread in self._background:
            thread.join(timeout=10)
        self._flush(self._drain_acks())
        if self._listener is not None:
            self._listener.stop()
        if self._registered:
            try:
                with self.queue.pool.connection() as conn:
                    if unstarted:
                        released = self.queries.release_jobs(
                            conn, self.id, [s.job.id for s in unstarted], [s.job.attempts for s in unstarted])
                        self.counters.released += len(released)
                    interrupted = self.queries.deregister_worker(conn, self.id)
                if interrupted:
                    log.warning("%d job(s) were still running at shutdown; they will run again", interrupted)
            except Exception as exc:
                log.error("could not deregister worker %s (%s); maintenance will rescue its jobs", self.id, exc)
            self._registered = False
        if self._mirror is not None:
            # Released and interrupted jobs are runnable again: their ids go back to Redis.
            self._mirror.retire(self.queue.pool)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            # Close the loop once it has stopped, or it leaks (ResourceWarning).
            if self._loop_thread is not None:
                self._loop_thread.join(timeout=5)
            if not self._loop.is_running():
                self._loop.close()
                self._loop, self._loop_thread = None, None
        log.info("worker %s stopped: %s", self.id, self.counters)
