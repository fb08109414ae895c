"""The background writer: contexts of finished attempts into the store, off the hot path.

The worker's acknowledger calls ``MemoryWriter.observe(job, outcome)`` once an
outcome is written. ``observe`` only appends to a bounded buffer (a full
buffer drops the context and counts it): it never blocks, never raises, and
never touches the network. A thread of the writer's own takes the buffer in
batches and hands each to a sink, which builds the contexts, embeds them and
upserts them: ``ProcessSink`` (the default, ``PGQ_MEMORY_WRITER=process``) in
a child process of the worker's own, so that embedding and qdrant-client's
per-point work never hold the worker's GIL; ``StoreSink`` in the worker's
process (``thread``). When the store fails (or the child dies) the batch is
dropped and counted, and the store (or child) is opened again after a growing
pause: jobs never notice. Retention deletes contexts past their age. A clean
stop (``close``) writes every buffered context before the store is closed;
``kill -9`` loses the buffered ones (at most about a flush interval's worth),
which Postgres still has in ``job_executions``.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import os
import pickle
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, NamedTuple, Protocol

from pgq.errors import PgqError
from pgq.executor import Completed, Failed, Outcome
from pgq.memory.context import ExecutionContext, payload_summary, traceback_frames
from pgq.memory.embedders import Embedder, check_embedder, make_embedder
from pgq.memory.store import ContextStore

if TYPE_CHECKING:
    from pgq.job import Job
    from pgq.settings import Settings

log = logging.getLogger("pgq.memory")

# How often retention runs (seconds): contexts live days, an hour late is fine.
RETENTION_EVERY = 3600.0
# The longest pause before the store (or the writer's process) is tried again (seconds).
MAX_BACKOFF = 60.0


@dataclass
class WriterCounters:
    """What the writer did since it started."""

    observed: int = 0
    stored: int = 0
    dropped_full: int = 0  # the buffer was full
    dropped_unavailable: int = 0  # the store failed while writing them (or was down)
    store_errors: int = 0
    reconnects: int = 0
    last_error: str | None = None


class FinishedAttempt(NamedTuple):
    """What the writer keeps of one finished attempt until it is a context: plain values,
    cheap to take in the worker and to pickle to the writer's process."""

    job_id: int
    attempt: int
    queue: str
    task: str
    outcome: str
    finished_at: float  # seconds since the epoch, when the writer saw it
    started_at: float | None
    error_type: str
    message: str
    traceback: str | None
    payload_keys: tuple[str, ...]
    payload: dict[str, Any] | None


def finished_attempt(job: Job, outcome: Outcome, finished_at: float, *, payload_values: bool) -> FinishedAttempt:
    """``job``'s current attempt ending with ``outcome``, as the writer keeps it."""
    keys, payload = payload_summary(job.payload, values=payload_values)
    started = job.started_at.timestamp() if job.started_at is not None else None
    if isinstance(outcome, Failed):
        return FinishedAttempt(job.id, job.attempts, job.queue, job.task, outcome.outcome, finished_at, started,
                               outcome.error_type, outcome.message, outcome.traceback, keys, payload)
    return FinishedAttempt(job.id, job.attempts, job.queue, job.task, "completed", finished_at, started, "", "", None,
                           keys, payload)


def context_of(attempt: FinishedAttempt, worker_id: str) -> ExecutionContext:
    """The context of a finished attempt (message normalised, traceback reduced to frames)."""
    a = attempt
    duration = max(0.0, (a.finished_at - a.started_at) * 1000.0) if a.started_at is not None else None
    return ExecutionContext(job_id=a.job_id, attempt=a.attempt, queue=a.queue, task=a.task, outcome=a.outcome,
                            finished_at=a.finished_at, error_type=a.error_type, message=a.message,
                            frames=traceback_frames(a.traceback), duration_ms=duration, worker_id=worker_id,
                            payload_keys=a.payload_keys, payload=a.payload)


@dataclass
class Report:
    """What a sink did with one batch (added to ``WriterCounters``)."""

    stored: int = 0
    dropped: int = 0
    errors: int = 0
    reconnects: int = 0
    last_error: str | None = None


class Sink(Protocol):
    """Where the writer's thread sends batches. ``write`` never raises: it reports."""

    def write(self, batch: list[FinishedAttempt], now: float) -> Report: ...

    def retry_now(self) -> None: ...

    def close(self) -> None: ...


class StoreSink:
    """Embeds and upserts batches into the store, in the process it runs in; reopens a
    failed store after a growing pause; runs retention (``now``: seconds since the epoch).

    Args:
        open_store: opens the store (default ``ContextStore.open``); called again after a failure.
        embedder: default ``make_embedder(settings.memory_embedder)``, made at the first write.
    """

    def __init__(self, settings: Settings, worker_id: str, *,
                 open_store: Callable[[Settings, int], ContextStore] | None = None,
                 embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self._open_store = open_store or ContextStore.open
        self._embedder = embedder
        self.store: ContextStore | None = None
        self._retry_at = 0.0
        self._backoff = 1.0
        self._down = False  # the store failed; the next open is a reconnect
        self._retention_at = 0.0
        self._report = Report()

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = make_embedder(self.settings.memory_embedder)
        return self._embedder

    def write(self, batch: list[FinishedAttempt], now: float) -> Report:
        self._report = report = Report()
        if batch:
            self._write(batch)
        self._retention(now)
        return report

    def _write(self, batch: list[FinishedAttempt]) -> None:
        store = self._usable_store()
        if store is None:
            self._report.dropped += len(batch)
            return
        try:
            contexts = [context_of(a, self.worker_id) for a in batch]
            store.upsert(contexts, self.embedder.embed(contexts))
        except Exception as exc:  # a store failure, or a context we could not build: drop, count, go on
            self._failed(exc, len(batch))
            return
        self._report.stored += len(batch)
        self._backoff = 1.0

    def _usable_store(self) -> ContextStore | None:
        """The open store, opening it when due; None while it is down."""
        if self.store is not None:
            return self.store
        if time.monotonic() < self._retry_at:
            return None
        try:
            self.store = self._open_store(self.settings, self.embedder.dimension)
        except PgqError as exc:
            self._failed(exc, 0)
            return None
        if self._down:
            self._down = False
            self._report.reconnects += 1
        return self.store

    def _failed(self, exc: BaseException, dropped: int) -> None:
        self._report.errors += 1
        self._report.dropped += dropped
        self._report.last_error = f"{type(exc).__name__}: {exc}"
        self._down = True
        if self.store is not None:
            self.store.close()
            self.store = None
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)

    def _retention(self, now: float) -> None:
        if self.store is None or now < self._retention_at:
            return
        self._retention_at = now + RETENTION_EVERY
        try:
            self.store.delete_older_than(now - self.settings.memory_retention_seconds)
        except Exception as exc:
            self._failed(exc, 0)

    def retry_now(self) -> None:
        self._retry_at = 0.0

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


def _send(stream: IO[bytes], message: object) -> None:
    pickle.dump(message, stream, protocol=pickle.HIGHEST_PROTOCOL)
    stream.flush()


class ProcessSink:
    """Runs a ``StoreSink`` in a child process (``python -m pgq.memory.process``), batch by batch.

    The child is started at the first write, speaks pickles over its stdin and stdout,
    ignores SIGINT and SIGTERM (a Ctrl-C or a supervisor's signal to the process group
    must not cut the worker's last flush short) and ends when told to or when its stdin
    closes (the worker died). A child that dies or stops answering is counted as a store
    failure: its batch dropped, a new child started after a growing pause.
    """

    def __init__(self, settings: Settings, worker_id: str) -> None:
        check_embedder(settings.memory_embedder)  # fail at worker start, not in the child
        self.settings = settings
        self.worker_id = worker_id
        self.process: subprocess.Popen[bytes] | None = None
        self._retry_at = 0.0
        self._backoff = 1.0
        self._lost = False
        self._retry_child = False

    def _child(self) -> subprocess.Popen[bytes] | None:
        if self.process is not None:
            return self.process
        if time.monotonic() < self._retry_at:
            return None
        env = dict(os.environ)
        # The child imports pgq from where this process did, installed or not.
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen([sys.executable, "-m", "pgq.memory.process"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env)
        assert self.process.stdin is not None
        _send(self.process.stdin, (self.settings, self.worker_id))
        return self.process

    def write(self, batch: list[FinishedAttempt], now: float) -> Report:
        if not batch and self.process is None:  # a retention tick: no reason to start a child
            return Report()
        try:
            child = self._child()
            if child is None:
                return Report(dropped=len(batch))
            assert child.stdin is not None and child.stdout is not None
            _send(child.stdin, ("write", batch, now, self._retry_child))
            report = pickle.load(child.stdout)
        except (OSError, EOFError, pickle.PickleError) as exc:
            return self._died(exc, len(batch))
        self._retry_child = False
        self._backoff = 1.0
        if self._lost:
            self._lost = False
            report.reconnects += 1
        if not isinstance(report, Report):  # never: the child answers every write with a Report
            return self._died(RuntimeError(f"unexpected answer {report!r}"), len(batch))
        return report

    def _died(self, exc: BaseException, dropped: int) -> Report:
        code = self._reap()
        self._lost = True
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)
        return Report(dropped=dropped, errors=1,
                      last_error=f"the memory's writer process failed ({type(exc).__name__}: {exc}; exit code {code})")

    def _reap(self) -> int | None:
        process, self.process = self.process, None
        if process is None:
            return None
        process.kill()  # if it still runs, it is stuck: the next child needs its local store
        code = process.wait()
        for stream in (process.stdin, process.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:  # unsent bytes to a dead process: nothing to keep
                pass
        return code

    def retry_now(self) -> None:
        self._retry_at = 0.0
        self._retry_child = True

    def close(self) -> None:
        """Tell the child to close the store and end; wait until it has (the local store is free then)."""
        process, self.process = self.process, None
        if process is None:
            return
        assert process.stdin is not None and process.stdout is not None
        try:
            _send(process.stdin, ("stop",))
            pickle.load(process.stdout)  # "stopped": the store is closed
            process.stdin.close()
            process.wait(10)
        except (OSError, EOFError, pickle.PickleError, subprocess.TimeoutExpired) as exc:
            log.warning("execution memory: the writer's process did not stop cleanly (%s)", exc)
            process.kill()
            process.wait()
        finally:
            process.stdout.close()


class MemoryWriter:
    """Buffers contexts and writes them from a background thread, through a sink.

    Args:
        settings: the ``memory_*`` settings (``memory_writer`` picks the sink).
        worker_id: recorded in each context.
        sink: default ``ProcessSink`` or ``StoreSink`` as ``settings.memory_writer`` says.
        wall: seconds since the epoch (finish times, retention); ``sample``: a number in [0, 1)
            (success sampling). Both injectable for tests.

    Raises:
        ConfigurationError: the embedder cannot be made (``minilm`` without ``pgq[semantic]``).
    """

    def __init__(self, settings: Settings, worker_id: uuid.UUID | str, *, sink: Sink | None = None,
                 wall: Callable[[], float] = time.time, sample: Callable[[], float] = random.random) -> None:
        self.settings = settings
        self.worker_id = str(worker_id)
        if sink is None:
            sink = (ProcessSink(settings, self.worker_id) if settings.memory_writer == "process"
                    else StoreSink(settings, self.worker_id, embedder=make_embedder(settings.memory_embedder)))
        self.sink = sink
        self._wall = wall
        self._sample = sample
        self.counters = WriterCounters()
        self._buffer: collections.deque[tuple[Job, Outcome, float]] = collections.deque()
        self._lock = threading.Lock()
        self._io = threading.Lock()  # one batch in the sink at a time (the thread, or a direct flush)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._idle_until = 0.0

    # ------------------------------------------------------------ producer side (hot path)
    def observe(self, job: Job, outcome: Outcome) -> None:
        """Keep this outcome's context (failures always, completions as sampled). O(1);
        never blocks, never raises."""
        try:
            if isinstance(outcome, Completed) and not (self.settings.memory_success_sample
                                                       and self._sample() < self.settings.memory_success_sample):
                return
            with self._lock:
                self.counters.observed += 1
                if len(self._buffer) >= self.settings.memory_buffer_size:
                    self.counters.dropped_full += 1
                    return
                self._buffer.append((job, outcome, self._wall()))
                full = len(self._buffer) >= self.settings.memory_batch_size
            if self._thread is None:
                self.start()
            if full:
                self._wake.set()
        except Exception:  # the memory must never fail a job
            log.exception("execution memory: could not keep a context")

    def pending(self) -> int:
        """Contexts waiting to be written."""
        with self._lock:
            return len(self._buffer)

    # ------------------------------------------------------------ writer side
    def start(self) -> None:
        """Start the writer thread (``observe`` does it on first use)."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="pgq-memory-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.settings.memory_flush_interval_seconds)
            self._wake.clear()
            self.flush()
        # The sink is only ever used from one thread at a time: the last flush and the close happen here.
        self._finish()

    def _finish(self) -> None:
        self.flush()
        with self._io:
            self.sink.close()

    def flush(self) -> int:
        """Write what is buffered now, batch by batch; return how many were stored.
        Called by the thread; tests and ``close`` call it directly."""
        stored = 0
        with self._io:
            wrote = False
            while True:
                with self._lock:
                    taken = [self._buffer.popleft() for _ in range(min(len(self._buffer), self.settings.memory_batch_size))]
                if not taken:
                    break
                wrote = True
                stored += self._write(taken)
            now = self._wall()
            if not wrote and now >= self._idle_until:  # nothing to write: let retention run now and then
                self._idle_until = now + RETENTION_EVERY
                self._account(self.sink.write([], now))
        return stored

    def _write(self, taken: list[tuple[Job, Outcome, float]]) -> int:
        batch = []
        for job, outcome, at in taken:
            try:
                batch.append(finished_attempt(job, outcome, at, payload_values=self.settings.memory_payload_values))
            except Exception as exc:  # a job we could not read: drop it alone, count it, go on
                self._account(Report(dropped=1, last_error=f"unreadable job ({type(exc).__name__}: {exc})"))
        if not batch:
            return 0
        report = self.sink.write(batch, self._wall())
        self._account(report)
        return report.stored

    def _account(self, report: Report) -> None:
        c = self.counters
        before = c.store_errors
        c.stored += report.stored
        c.dropped_unavailable += report.dropped
        c.store_errors += report.errors
        c.reconnects += report.reconnects
        if report.last_error is not None:
            c.last_error = report.last_error
        if report.errors and (before == 0 or before // 100 != c.store_errors // 100):
            log.warning("execution memory unavailable (%s); %d context(s) dropped so far", c.last_error,
                        c.dropped_unavailable)
        if report.reconnects:
            log.warning("execution memory: the store is back")

    def retry_now(self) -> None:
        """Forget the pause after a failure: the next flush tries the store again."""
        self.sink.retry_now()

    def close(self, timeout: float = 30.0) -> None:
        """Stop: write what is left and close the store, waiting up to ``timeout`` seconds.

        With a writer thread, the thread does it (the store is never used from two
        threads at once: qdrant-client's local mode is not safe for that); past the
        timeout it goes on alone (a daemon thread) and ``close`` returns. Usually
        a fraction of a second; the timeout is for a writer's process still starting
        on a busy machine (its imports alone took 5–24 s at a load average of 20).
        """
        self._stop.set()
        self._wake.set()
        with self._lock:
            thread = self._thread
        if thread is None:
            self._finish()
            return
        thread.join(timeout)
        if thread.is_alive():
            log.warning("execution memory: %d context(s) still being written after %.0f s; not waiting",
                        self.pending(), timeout)


def open_writer(settings: Settings, worker_id: uuid.UUID) -> MemoryWriter | None:
    """The worker's writer when the memory is on (``Settings.memory_enabled``), else None."""
    if not settings.memory_enabled:
        return None
    return MemoryWriter(settings, worker_id)


def utc(seconds: float) -> dt.datetime:
    """Seconds since the epoch as an aware UTC datetime."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC)
