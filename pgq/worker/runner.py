"""Running claimed jobs: the local buffer, runner threads, the event loop, deadlines.

``Runner`` holds the jobs this worker claimed and has not finished (``Slot``s):
buffered ones wait for one of ``concurrency`` runner threads (sync handlers),
``async def`` handlers run on one event loop thread. A finished job's outcome
goes to the ``Acknowledger`` before the job leaves the runner, so the
heartbeat always finds it in one of the two. A timed-out job is failed at its
deadline and its handler asked to stop (a thread cannot be killed). What an
outcome means is decided by the database, not here.
"""

from __future__ import annotations

import asyncio
import logging
import queue as queue_module
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pgq.executor import Failed, JobContext, Outcome, run_async, run_sync, timed_out, unknown_task
from pgq.worker.prefetch import ALWAYS

if TYPE_CHECKING:
    from pgq.clock import Clock
    from pgq.job import Job
    from pgq.worker.acknowledger import Acknowledger
    from pgq.worker.claim import ClaimSource

log = logging.getLogger("pgq.worker")


class Handler(Protocol):
    """What the runner needs of a registered task (``pgq.Task``)."""

    @property
    def fn(self) -> Callable[..., Any]: ...

    @property
    def is_async(self) -> bool: ...


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
    """

    def __init__(self, tasks: Mapping[str, Handler], concurrency: int, acknowledger: Acknowledger,
                 source: ClaimSource, clock: Clock, wake: threading.Event, stopping: threading.Event) -> None:
        self.tasks = tasks
        self.concurrency = concurrency
        self.acknowledger = acknowledger
        self.source = source
        self.clock = clock
        self._wake = wake
        self._stopping = stopping
        self.lock = threading.Lock()
        # Claimed jobs not finished yet: buffered (waiting for a runner) and running.
        self.in_flight: dict[int, Slot] = {}
        self.finished = 0  # jobs finished since the start (the prefetch rate counts them)
        # A finished job wakes the claim loop only when the number of jobs in
        # flight falls to this level (set by the loop before it waits): at 20,000
        # jobs/s, waking it on every completion cost more GIL time than claiming.
        self.refill_at = ALWAYS
        self._ready: queue_module.SimpleQueue[Slot | None] = queue_module.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None

    # ------------------------------------------------------------ starting jobs
    def start(self) -> None:
        """Start the runner threads (once)."""
        while len(self._threads) < self.concurrency:
            thread = threading.Thread(target=self._run, name=f"pgq-job-{len(self._threads)}", daemon=True)
            thread.start()
            self._threads.append(thread)

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
            future = asyncio.run_coroutine_threadsafe(
                run_async(task.fn, slot.ctx, job.timeout_seconds), self._event_loop())
            future.add_done_callback(lambda f: self.finish(slot, _outcome_of(f)))
        else:
            self._ready.put(slot)

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
                    timeout = slot.job.timeout_seconds
                    if timeout is not None:
                        slot.deadline = self.clock.monotonic() + timeout
            if skip:
                self.finish(slot, None)
                continue
            self.finish(slot, run_sync(self.tasks[slot.job.task].fn, slot.ctx))

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self.lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="pgq-async", daemon=True)
                thread.start()
                self._loop, self._loop_thread = loop, thread
            return self._loop

    # ------------------------------------------------------------ finishing jobs
    def finish(self, slot: Slot, outcome: Outcome | None) -> None:
        """The handler returned (``outcome``), or the job ended without one (None)."""
        with self.lock:
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
        if not report:
            self.source.finished([slot.job.id])  # cancelled or rescued: no outcome to write
        if wake:
            self._wake.set()

    def enforce_deadlines(self) -> None:
        """Fail the running jobs past their timeout and ask their handlers to stop."""
        now = self.clock.monotonic()
        expired: list[Slot] = []
        with self.lock:
            for slot in self.in_flight.values():
                if slot.deadline is not None and not slot.reported and now >= slot.deadline:
                    slot.reported = True
                    self.acknowledger.put(slot.job, timed_out(slot.job.timeout_seconds))
                    expired.append(slot)
        for slot in expired:
            # A thread cannot be killed: the job is failed now and the handler is
            # asked to stop; its slot frees when the function returns.
            log.warning("job %s exceeded its timeout of %s s", slot.job.id, slot.job.timeout_seconds)
            slot.ctx.cancel()

    def nearest_deadline(self) -> float | None:
        with self.lock:
            return min((s.deadline for s in self.in_flight.values() if s.deadline is not None and not s.reported),
                       default=None)

    def abandon(self, job_id: int, why: str) -> None:
        """The job is no longer this worker's (cancelled, rescued, timed out): stop its handler."""
        with self.lock:
            slot = self.in_flight.get(job_id)
            if slot is None or slot.reported:
                return
            slot.reported = True
        log.info("job %s: %s; stopping its handler", job_id, why)
        slot.ctx.cancel()

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
        """Let the runner threads end (after their current job)."""
        for _ in self._threads:
            self._ready.put(None)

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
