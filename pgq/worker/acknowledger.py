"""Writing outcomes: batched completions, one-by-one failures, back-pressure, retries.

The ``Acknowledger`` takes ``(job, outcome)`` pairs from the runner and writes
them from a thread of its own: completions in batches (``complete_jobs``, up to
``ack_batch_size`` gathered for ``ack_interval_seconds``, or fewer at once when
the worker holds no other job: nothing more is coming, and a job graph's next
job may be waiting for this commit), failures one by one (``fail_job``). A job
is the worker's until its outcome is committed or given up: ``pending_ids()``
lists those jobs for the heartbeat, which would otherwise rescue them as lost.
When outcomes queue up faster than they are written, ``behind()`` tells the
claim loop to stop claiming; the next flush wakes it. What an outcome means
(retry, dead letter) is the stored functions' business.
"""

from __future__ import annotations

import logging
import queue as queue_module
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pgq.db import translated
from pgq.errors import ValidationError
from pgq.executor import Completed, Failed, Outcome

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from pgq.clock import Clock
    from pgq.job import Job
    from pgq.queries import Queries
    from pgq.settings import Settings
    from pgq.worker.counters import WorkerCounters

log = logging.getLogger("pgq.worker")

Ack = tuple["Job", Outcome]


class Acknowledger:
    """Writes one worker's outcomes.

    Args:
        settings: ``ack_batch_size``, ``ack_interval_seconds``, ``database_url``.
        pool, queries, worker_id, counters, clock: what the writes need (``pool``
            returns the connection pool).
        before_write: called with the job ids of a batch before it is written (the
            claim source stops counting them as held).
        wake: wakes the claim loop (a failure may make a retry due soon; a flush
            ends back-pressure).
        force: set when the worker must stop now: a failing write is given up after
            three tries (the jobs are rescued later).
        observe: called with each outcome once it is written (the execution memory,
            ``pgq.memory``); must return at once and never raise.
        quiet: True when no outcome is coming soon (the worker holds no job): a batch
            gathered so far is written without waiting out ``ack_interval_seconds``.
    """

    def __init__(self, settings: Settings, pool: Callable[[], ConnectionPool], queries: Queries, worker_id: uuid.UUID,
                 counters: WorkerCounters, clock: Clock, *, before_write: Callable[[Sequence[int]], None],
                 wake: Callable[[], None], force: threading.Event,
                 observe: Callable[[Job, Outcome], None] | None = None,
                 quiet: Callable[[], bool] | None = None) -> None:
        self.settings = settings
        self.pool = pool
        self.queries = queries
        self.worker_id = worker_id
        self.counters = counters
        self.clock = clock
        self._before_write = before_write
        self._wake = wake
        self._force = force
        # Health samples (issue 11): round trips and how long outcomes wait for their commit.
        counters.metrics.enabled = settings.health_sampling
        self._metrics = counters.metrics if settings.health_sampling else None
        self._exporter = counters.exporter  # Prometheus (PGQ_METRICS_PORT), None when off
        self._timed = self._metrics is not None or self._exporter is not None
        # When the oldest outcome not yet written was queued (only while sampling; None:
        # none waits). One clock read per batch, not per outcome: the next write's lag.
        self._waiting_since: float | None = None
        self._observe = observe
        self._quiet = quiet
        self._queue: queue_module.SimpleQueue[Ack] = queue_module.SimpleQueue()
        # Outcomes queued or being written: (job id, attempt) -> how many.
        self._pending: dict[tuple[int, int], int] = {}
        # Of those, the ones this worker claimed again on the same attempt meanwhile (``holds``):
        # an outcome refused as stale is written once more, for the new claim.
        self._claimed_again: set[tuple[int, int]] = set()
        self._lock = threading.Lock()
        # Notified when no outcome is left to write (a burst run waits for that).
        self._settled = threading.Condition(self._lock)
        # Set when claiming paused because outcomes were not written yet.
        self._blocked = False

    # ------------------------------------------------------------ producer side
    def put(self, job: Job, outcome: Outcome) -> None:
        """Queue an outcome; the job stays listed in ``pending_ids()`` until it is written."""
        with self._lock:
            key = (job.id, job.attempts)
            self._pending[key] = self._pending.get(key, 0) + 1
            if self._metrics is not None and self._waiting_since is None:
                self._waiting_since = self.clock.monotonic()
        self._queue.put((job, outcome))

    def pending_ids(self) -> list[int]:
        """Jobs whose outcome is not written yet (the heartbeat lists them as running)."""
        with self._lock:
            return list({job_id for job_id, _ in self._pending})

    def holds(self, jobs: Sequence[Job]) -> set[int]:
        """The ids of those newly claimed ``jobs`` with an outcome for the same attempt queued or
        being written: that outcome settles the new claim too (the fence, job, worker and attempt,
        is the same), so the caller does not run them again.

        A write of that outcome may already have been refused as stale, the database having
        rescued the job before this claim of it committed; the refusal is then not final: the
        outcome is written once more, for the new claim (``_refused``). The check and that
        mark are one step under the lock, so a refusal seen after it is always written again.
        """
        with self._lock:
            pending = self._pending
            held = {(job.id, job.attempts) for job in jobs if (job.id, job.attempts) in pending} if pending else set()
            self._claimed_again |= held
            return {job_id for job_id, _ in held}

    def _refused(self, job: Job) -> bool:
        """A write of ``job``'s outcome was refused as stale: True when it is to be written once more
        (this worker claimed the job again on the same attempt while it was pending; see ``holds``)."""
        with self._lock:
            key = (job.id, job.attempts)
            if key in self._claimed_again:
                self._claimed_again.discard(key)
                return True
            return False

    def wait_settled(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every queued outcome is written (or given
        up); True when none is left."""
        with self._settled:
            return self._settled.wait_for(lambda: not self._pending, timeout)

    def behind(self) -> bool:
        """True when outcomes are queued faster than written: do not claim more now.

        Finished jobs whose outcome is not written yet are still running in the
        database. The next flush wakes the claim loop.
        """
        if self._queue.qsize() > 2 * self.settings.ack_batch_size:
            self._blocked = True
            return True
        return False

    # ------------------------------------------------------------ writer side
    def run(self, stop: threading.Event) -> None:
        """The acknowledger thread: gather batches and write them until ``stop`` and empty."""
        interval = self.settings.ack_interval_seconds
        limit = self.settings.ack_batch_size
        while True:
            try:
                first = self._queue.get(timeout=0.1)
            except queue_module.Empty:
                if stop.is_set():
                    return
                continue
            batch = [first]
            deadline = self.clock.monotonic() + interval
            while len(batch) < limit:
                if self._quiet is not None and self._queue.empty() and self._quiet():
                    break  # nothing more is coming: waiting would only delay these
                remaining = deadline - self.clock.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(self._queue.get(timeout=remaining))
                except queue_module.Empty:
                    break
            self.flush(batch)
            if self._blocked:
                self._blocked = False
                self._wake()

    def flush_all(self) -> None:
        """Write every queued outcome now, in the calling thread."""
        items = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue_module.Empty:
                break
        self.flush(items)

    def flush(self, batch: list[Ack]) -> None:
        """Write outcomes; retry on database errors until written (or forced to stop).

        An outcome the database rejects for good (bad data, not a dropped
        connection) is replaced by a plain failure naming the rejection, so one
        bad report never blocks the others nor leaves its job running.
        """
        if not batch:
            return
        # Leave the claim source's held set first: once an outcome is written the id
        # must not count as held (a retry due at once is then offered to Redis again).
        self._before_write([job.id for job, _ in batch])
        completions = [(job, o) for job, o in batch if isinstance(o, Completed)]
        failures = [(job, o) for job, o in batch if isinstance(o, Failed)]
        backoff = 0.05
        tries = 0
        while completions or failures:
            try:
                with translated(self.settings.database_url), self.pool().connection() as conn:
                    if completions:
                        self._write_completions(conn, completions, failures)
                        completions = []
                    while failures:
                        self._write_failure(conn, *failures[0])
                        failures.pop(0)
            except Exception as exc:  # a lost ack is recovered by rescue; keep trying meanwhile
                tries += 1
                self.counters.errors += 1
                if self._force.is_set() and tries >= 3:
                    log.error("giving up on %d outcome(s) after %d tries (%s); the jobs will be rescued",
                              len(completions) + len(failures), tries, exc)
                    self._written([job for job, _ in completions] + [job for job, _ in failures])
                    return
                log.warning("writing outcomes failed (%s); retrying in %.2f s", exc, backoff)
                self._force.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _written(self, jobs: Sequence[Job]) -> None:
        """These outcomes are committed (or given up): the jobs are no longer this worker's."""
        with self._lock:
            for job in jobs:
                key = (job.id, job.attempts)
                left = self._pending.get(key, 0) - 1
                if left > 0:
                    self._pending[key] = left
                else:
                    self._pending.pop(key, None)
                    self._claimed_again.discard(key)
            if not self._pending:
                self._settled.notify_all()
            # The ack lag: how long the oldest outcome waiting since the previous write
            # waited (an outcome queued while this batch was written counts from then on).
            since, self._waiting_since = self._waiting_since, None
        if self._metrics is not None and since is not None:
            self._metrics.outcome_waited(self.clock.monotonic() - since)

    def _write_completions(self, conn: Any, completions: list[tuple[Job, Completed]],
                           failures: list[tuple[Job, Failed]]) -> None:
        """Write a batch of completions (autocommit: one transaction); a result the
        database rejects becomes a failure appended to ``failures``."""
        try:
            self._complete(conn, completions)
        except ValidationError as exc:
            if len(completions) == 1:
                job = completions[0][0]
                log.error("the database rejected the result of job %s: %s", job.id, exc)
                # Still pending: the failure that replaces it is written next.
                failures.append((job, Failed("ResultRejected", f"result not stored: {exc}", fatal=True)))
                return
            # Find the culprit: write the batch one by one.
            for item in completions:
                self.flush([item])
            return
        self._written([job for job, _ in completions])

    def _complete(self, conn: Any, completions: list[tuple[Job, Completed]]) -> None:
        """Write a batch of completions; one refused as stale whose job this worker claimed again
        meanwhile (``holds``) is written once more, for the new claim."""
        again = self._complete_once(conn, completions)
        if again:
            log.info("job(s) %s were claimed again while their completion was written: writing it again",
                     [job.id for job, _ in again])
            self._complete_once(conn, again)

    def _complete_once(self, conn: Any, completions: list[tuple[Job, Completed]]) -> list[tuple[Job, Completed]]:
        self.counters.ack_round_trips += 1
        sent = self.clock.monotonic()
        done = self.queries.complete_jobs(
            conn, self.worker_id, [j.id for j, _ in completions], [j.attempts for j, _ in completions],
            [o.result_json for _, o in completions],
        )
        self._round_trip("complete", len(completions), sent)
        self.counters.completed += len(done)
        if self._exporter is not None:
            self._exporter.completed(job for job, _ in completions if job.id in done)
        again = []
        for job, outcome in completions:
            if job.id in done:
                if self._observe is not None:
                    self._observe(job, outcome)
            elif self._refused(job):
                again.append((job, outcome))
            else:
                log.info("completion of job %s attempt %s was stale (rescued, cancelled or timed out "
                         "meanwhile); discarded", job.id, job.attempts)
        # A refusal written again is not a stale report (unless the second write is refused too).
        self.counters.stale_reports += len(completions) - len(done) - len(again)
        return again

    def _write_failure(self, conn: Any, job: Job, o: Failed) -> None:
        try:
            ok = self._fail(conn, job, o)
            if not ok and self._refused(job):  # claimed again meanwhile: for the new claim (``holds``)
                ok = self._fail(conn, job, o)
        except ValidationError as exc:
            log.error("the database rejected the failure report of job %s: %s", job.id, exc)
            ok = self._fail(conn, job, Failed("OutcomeRejected", f"failure report rejected: {exc}"))
        self._written([job])
        if ok:
            self.counters.failed += 1
            self.counters.failed_jobs.add(job.id)
            if self._exporter is not None:
                self._exporter.failed(job, o.outcome)
            if self._observe is not None:
                self._observe(job, o)
            # The job may be retrying, due soon: a delayed retry sends no NOTIFY,
            # and the claim loop chose its idle wait before this was written.
            # Wake it so that it sees the new run_at (``idle_wait``).
            self._wake()
        else:
            self.counters.stale_reports += 1
            log.info("failure report for job %s attempt %s was stale; discarded", job.id, job.attempts)

    def _fail(self, conn: Any, job: Job, o: Failed) -> bool:
        self.counters.ack_round_trips += 1
        sent = self.clock.monotonic()
        ok = self.queries.fail_job(conn, job.id, self.worker_id, job.attempts, o.error_type, o.message,
                                   o.traceback, o.retry_delay, o.fatal, o.outcome)
        self._round_trip("fail", 1, sent)
        return ok

    def _round_trip(self, kind: str, outcomes: int, sent: float) -> None:
        """Record an outcome statement sent at ``sent`` (health samples, Prometheus)."""
        if not self._timed:
            return
        seconds = self.clock.monotonic() - sent
        if self._metrics is not None:
            self._metrics.ack_round_trip(seconds)
        if self._exporter is not None:
            self._exporter.acknowledged(kind, outcomes, seconds)
