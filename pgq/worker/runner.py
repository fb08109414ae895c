"""Running claimed jobs: the local buffer, runner threads, the event loop, deadlines.

``Runner`` holds the jobs this worker claimed and has not finished (``Slot``s):
buffered ones wait for one of ``concurrency`` runner threads (sync handlers),
``async def`` handlers run on one event loop thread. A finished job's outcome
goes to the ``Acknowledger`` before the job leaves the runner, so the
heartbeat always finds it in one of the two. What an outcome means is decided
by the database, not here.

Deadlines. An async handler is cancelled at its job's timeout. A thread cannot
be killed: a sync handler past its timeout has its job failed (``timed_out``),
is asked to stop (``current_job().cancelled``), and its thread is *detached*:
it leaves the worker's capacity, a new runner thread takes its place (so
``concurrency`` jobs still run at once), and it ends when its handler returns.
Until then it counts as a stuck handler (``stuck``); at ``max_stuck`` of them
the runner calls ``on_too_many_stuck`` (the worker drains and exits, so that a
supervisor starts a fresh process). A sync handler whose job was cancelled or
taken away is detached the same way at its deadline. The normal path pays one
attribute check per job.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue as queue_module
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pgq.executor import Failed, JobContext, Outcome, run_async, run_sync, timed_out, unknown_task
from pgq.worker.prefetch import ALWAYS
from pgq.worker.processes import ProcessPool

if TYPE_CHECKING:
    from pgq.clock import Clock
    from pgq.job import Job
    from pgq.worker.acknowledger import Acknowledger
    from pgq.tracing import Tracer
    from pgq.worker.claim import ClaimSource

log = logging.getLogger("pgq.worker")


class Handler(Protocol):
    """What the runner needs of a registered task (``pgq.Task``)."""

    @property
    def fn(self) -> Callable[..., Any]: ...

    @property
    def is_async(self) -> bool: ...

    @property
    def isolation(self) -> str: ...


@dataclass
class Slot:
    """One claimed job inside this worker."""

    job: Job
    ctx: JobContext
    deadline: float | None = None
    # True once a runner took it (a buffered job that never started can be released).
    started: bool = False
    # True once an outcome was sent (or must not be: cancelled / rescued).
    reported: bool = False
    # True once its runner thread was replaced (its handler ran past the deadline).
    detached: bool = False
    # True when its handler runs in a child process (isolation="process").
    process: bool = False


def _outcome_of(future: Any) -> Outcome:
    exc = future.exception()
    return Failed(type(exc).__name__, str(exc)) if exc is not None else future.result()


class Runner:
    """Runs one worker's claimed jobs and hands their outcomes to the acknowledger.

    Args:
        tasks: task name -> handler (the queue's registry, read when a job starts).
        concurrency: runner threads for sync handlers.
        acknowledger: takes the outcomes.
        source: told about jobs that finish without an outcome to write.
        clock: for deadlines.
        wake: the claim loop's wake-up event.
        stopping: set when the worker stops (buffered jobs are then not started).
        max_stuck: stuck handlers at which ``on_too_many_stuck`` is called (default: ``concurrency``).
        on_too_many_stuck: called (once) when ``max_stuck`` handlers are stuck at once.
        tracer: runs each attempt in a ``pgq.attempt`` span (``pgq.tracing``); None when off.
    """

    def __init__(self, tasks: Mapping[str, Handler], concurrency: int, acknowledger: Acknowledger,
                 source: ClaimSource, clock: Clock, wake: threading.Event, stopping: threading.Event, *,
                 max_stuck: int | None = None, on_too_many_stuck: Callable[[int], None] | None = None,
                 tracer: Tracer | None = None) -> None:
        self.tasks = tasks
        self.concurrency = concurrency
        self.max_stuck = concurrency if max_stuck is None else max_stuck
        self._on_too_many_stuck = on_too_many_stuck
        # Detached runner threads whose handler has not returned yet.
        self.stuck = 0
        # True once max_stuck handlers were stuck at once.
        self.too_many_stuck = False
        self.acknowledger = acknowledger
        self.source = source
        self.clock = clock
        self._wake = wake
        self._stopping = stopping
        self.lock = threading.Lock()
        # Claimed jobs not finished yet: buffered (waiting for a runner) and running.
        self.in_flight: dict[int, Slot] = {}
        # The started slots with a deadline (jobs with a timeout), by id(slot): the claim
        # loop checks deadlines on every turn, and most jobs have none, so it looks here
        # rather than at every slot in flight (hundreds at a high rate).
        self._deadlines: dict[int, Slot] = {}
        self.finished = 0  # jobs finished since the start (the prefetch rate counts them)
        # A finished job wakes the claim loop only when the number of jobs in
        # flight falls to this level (set by the loop before it waits): at 20,000
        # jobs/s, waking it on every completion cost more GIL time than claiming.
        self.refill_at = ALWAYS
        self._ready: queue_module.SimpleQueue[Slot | None] = queue_module.SimpleQueue()
        self._started = False
        self._threads_made = 0  # names the runner threads
        # Child processes of isolation="process" tasks (made at the first such job).
        self.processes: ProcessPool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        # Health samples (issue 11): handler run times, the event loop's lag; None when off.
        metrics = acknowledger.counters.metrics
        self._metrics = metrics if metrics.enabled else None
        self._exporter = acknowledger.counters.exporter  # Prometheus; None when off
        self._timed = self._metrics is not None or self._exporter is not None
        self._tracer = tracer

    # ------------------------------------------------------------ starting jobs
    def start(self) -> None:
        """Start the runner threads (once)."""
        if self._started:
            return
        self._started = True
        for _ in range(self.concurrency):
            self._new_thread()

    def _new_thread(self) -> None:
        self._threads_made += 1
        threading.Thread(target=self._run, name=f"pgq-job-{self._threads_made}", daemon=True).start()

    def dispatch(self, job: Job) -> None:
        """Take a claimed job: run it on the event loop, or buffer it for a runner thread."""
        task = self.tasks.get(job.task)
        slot = Slot(job, JobContext(job))
        with self.lock:
            self.in_flight[job.id] = slot
        if task is None:
            slot.started = True
            self.finish(slot, unknown_task(job))
        elif task.is_async:
            slot.started = True
            if self._exporter is not None:
                self._exporter.started(job)
            loop = self._event_loop()
            began = self.clock.monotonic()
            attempt = run_async(task.fn, slot.ctx, job.timeout_seconds)
            if self._tracer is not None:
                attempt = self._tracer.run_async(job, attempt)
            future = asyncio.run_coroutine_threadsafe(attempt, loop)
            future.add_done_callback(lambda f: self._async_done(slot, f, began))
        else:
            self._ready.put(slot)

    def _async_done(self, slot: Slot, future: Any, began: float) -> None:
        if self._timed:
            self._ran(slot.job, self.clock.monotonic() - began)
        self.finish(slot, _outcome_of(future))

    def _ran(self, job: Job, seconds: float) -> None:
        """A handler returned after ``seconds`` (health samples, Prometheus)."""
        if self._metrics is not None:
            self._metrics.job_finished(seconds)
        if self._exporter is not None:
            self._exporter.ran(job, seconds)

    def _run(self) -> None:
        """One of ``concurrency`` threads running sync handlers from the buffer."""
        while True:
            slot = self._ready.get()
            if slot is None:
                return
            with self.lock:
                if slot.reported or slot.started:
                    # Cancelled or rescued while buffered, or released at shutdown.
                    skip = True
                elif self._stopping.is_set():
                    # Stopping: a buffered job is not started; shutdown releases it.
                    continue
                else:
                    skip = False
                    slot.started = True
                    task = self.tasks[slot.job.task]
                    slot.process = task.isolation == "process"
                    timeout = slot.job.timeout_seconds
                    if timeout is not None:
                        slot.deadline = self.clock.monotonic() + timeout
                        self._deadlines[id(slot)] = slot
            if skip:
                self.finish(slot, None)
                continue
            timed = self._timed
            if timed:
                if self._exporter is not None:
                    self._exporter.started(slot.job)
                began = self.clock.monotonic()
            if self._tracer is None:
                outcome = self._attempt(slot, task)
            else:
                outcome = self._tracer.run(slot.job, functools.partial(self._attempt, slot, task))
            if timed:
                self._ran(slot.job, self.clock.monotonic() - began)
            if not self.finish(slot, outcome):
                return  # detached: another thread took this one's place

    def _attempt(self, slot: Slot, task: Handler) -> Outcome:
        """Run a sync handler: on this thread, or in a child process (isolation="process")."""
        return self._in_process(slot, task) if slot.process else run_sync(task.fn, slot.ctx)

    def _in_process(self, slot: Slot, task: Handler) -> Outcome:
        """Run a process-isolated handler in a child process (see ``processes``)."""
        with self.lock:
            if self.processes is None:
                self.processes = ProcessPool()
            pool = self.processes
        return pool.run((task.fn.__module__, task.fn.__qualname__), slot.job, slot.ctx.cancelled)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self.lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="pgq-async", daemon=True)
                thread.start()
                self._loop, self._loop_thread = loop, thread
                if self._metrics is not None:
                    self._metrics.watch_loop(loop)
            return self._loop

    # ------------------------------------------------------------ finishing jobs
    def finish(self, slot: Slot, outcome: Outcome | None) -> bool:
        """The handler returned (``outcome``), or the job ended without one (None).

        Returns False when the slot's runner thread was detached meanwhile (the
        handler ran past its deadline): that thread must end.
        """
        with self.lock:
            self._deadlines.pop(id(slot), None)
            detached = slot.detached
            if detached:
                self.stuck -= 1
                stuck = self.stuck
            else:
                report = not slot.reported and outcome is not None
                if report:
                    assert outcome is not None
                    # Queued before the job leaves in_flight: a heartbeat in between
                    # finds it in one of the two (else it would be rescued as lost).
                    self.acknowledger.put(slot.job, outcome)
                if self.in_flight.get(slot.job.id) is slot:
                    del self.in_flight[slot.job.id]
                slot.reported = True
                self.finished += 1
                wake = len(self.in_flight) <= self.refill_at or self._stopping.is_set()
        if detached:
            log.info("the handler of job %s returned after its deadline; %d handler(s) still stuck",
                     slot.job.id, stuck)
            return False
        if not report:
            self.source.finished([slot.job.id])  # cancelled or rescued: no outcome to write
        if wake:
            self._wake.set()
        return True

    def enforce_deadlines(self) -> None:
        """Fail the running jobs past their timeout, ask their handlers to stop, and
        detach the threads of sync handlers past their deadline (see the module doc)."""
        now = self.clock.monotonic()
        expired: list[tuple[Slot, bool]] = []  # (slot, whether this call failed its job)
        with self.lock:
            for slot in self._deadlines.values():
                if slot.deadline is not None and now >= slot.deadline and self.in_flight.get(slot.job.id) is slot:
                    failed = not slot.reported
                    if failed:
                        slot.reported = True
                        self.acknowledger.put(slot.job, timed_out(slot.job.timeout_seconds))
                    expired.append((slot, failed))
            killed = [(slot, failed) for slot, failed in expired if slot.process]
            expired = [(slot, failed) for slot, failed in expired if not slot.process]
            for slot, _ in killed:
                # Its process is killed below; its runner thread returns at once.
                slot.deadline = None
                del self._deadlines[id(slot)]
            for slot, _ in expired:
                # Every other slot with a deadline is a sync handler's, on a runner thread.
                del self._deadlines[id(slot)]
                del self.in_flight[slot.job.id]
                slot.detached = True
                self.stuck += 1
                self.finished += 1
            stuck = self.stuck
            replace = bool(expired) and self._started and not self._stopping.is_set()
            limit = expired and stuck >= self.max_stuck and not self.too_many_stuck
            if limit:
                self.too_many_stuck = True
        for slot, failed in killed:
            log.warning("job %s exceeded its timeout of %s s; %s its handler's process", slot.job.id,
                        slot.job.timeout_seconds, "failed, killing" if failed else "killing")
            self._kill(slot)
        for slot, failed in expired:
            if failed:
                log.warning("job %s exceeded its timeout of %s s; it is failed, its handler asked to stop and "
                            "its thread replaced (%d stuck handler(s))", slot.job.id, slot.job.timeout_seconds,
                            stuck)
            else:
                log.warning("the handler of job %s (no longer this worker's) still runs at its deadline; "
                            "its thread is replaced (%d stuck handler(s))", slot.job.id, stuck)
                self.source.finished([slot.job.id])  # cancelled or rescued: no outcome to write
            slot.ctx.cancel()
            if replace:
                self._new_thread()
        if expired:
            self._wake.set()  # capacity came back
        if limit:
            log.error("%d sync handlers are stuck past their timeout (limit %d)", stuck, self.max_stuck)
            if self._on_too_many_stuck is not None:
                self._on_too_many_stuck(stuck)

    def nearest_deadline(self) -> float | None:
        with self.lock:
            return min((s.deadline for s in self._deadlines.values()
                        if s.deadline is not None and self.in_flight.get(s.job.id) is s), default=None)

    def abandon(self, job_id: int, why: str) -> None:
        """The job is no longer this worker's (cancelled, rescued, timed out): stop its handler
        (a process-isolated one is killed)."""
        with self.lock:
            slot = self.in_flight.get(job_id)
            if slot is None or slot.reported:
                return
            slot.reported = True
        log.info("job %s: %s; stopping its handler", job_id, why)
        if slot.process:
            self._kill(slot)
        else:
            slot.ctx.cancel()

    def _kill(self, slot: Slot) -> None:
        """Stop a process-isolated handler: set ``cancelled`` first (a child still starting
        sees it), then kill the child running it."""
        slot.ctx.cancel()
        if self.processes is not None:
            self.processes.kill(slot.job.id)

    # ------------------------------------------------------------ views
    def count(self) -> int:
        """Claimed jobs not finished (buffered or running)."""
        with self.lock:
            return len(self.in_flight)

    def owned_ids(self) -> list[int]:
        """Jobs held and not reported yet (outcomes queued are the acknowledger's)."""
        with self.lock:
            return [job_id for job_id, s in self.in_flight.items() if not s.reported]

    def unreported(self, *, started_only: bool = False) -> list[Slot]:
        with self.lock:
            return [s for s in self.in_flight.values() if not s.reported and (s.started or not started_only)]

    # ------------------------------------------------------------ shutdown
    def take_unstarted(self) -> list[Slot]:
        """Remove the buffered, never-started jobs from this worker (to release them)."""
        taken = []
        with self.lock:
            for slot in list(self.in_flight.values()):
                if not slot.started and not slot.reported:
                    slot.started = True  # a runner that still dequeues it skips it
                    slot.reported = True
                    del self.in_flight[slot.job.id]
                    taken.append(slot)
        return taken

    def stop_threads(self) -> None:
        """Let the runner threads end (after their current job); detached ones end when
        their handler returns."""
        if self._started:
            for _ in range(self.concurrency):
                self._ready.put(None)

    def close_processes(self) -> None:
        """Stop the child processes (killing those still running a handler)."""
        with self.lock:
            pool = self.processes
        if pool is not None:
            pool.close()

    def close_loop(self) -> None:
        """Stop and close the event loop of async handlers (if one was started)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            # Close the loop once it has stopped, or it leaks (ResourceWarning).
            if self._loop_thread is not None:
                self._loop_thread.join(timeout=5)
            if not self._loop.is_running():
                self._loop.close()
                self._loop, self._loop_thread = None, None
