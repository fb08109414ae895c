"""The background writer: contexts of finished attempts into the store, off the hot path.

The worker's acknowledger calls ``MemoryWriter.observe(job, outcome)`` once an
outcome is written. ``observe`` only appends to a bounded buffer (a full
buffer drops the context and counts it): it never blocks, never raises, and
never touches the network. A thread of the writer's own builds contexts,
embeds them and upserts them in batches. When the store fails it drops the
batch (counted), closes the store and opens it again after a growing pause:
jobs never notice. It also deletes contexts past their retention.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pgq.errors import PgqError
from pgq.executor import Completed, Failed, Outcome
from pgq.memory.context import ExecutionContext, payload_summary, traceback_frames
from pgq.memory.embedders import Embedder, make_embedder
from pgq.memory.store import ContextStore

if TYPE_CHECKING:
    from pgq.job import Job
    from pgq.settings import Settings

log = logging.getLogger("pgq.memory")

# How often retention runs (seconds): contexts live days, an hour late is fine.
RETENTION_EVERY = 3600.0


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


def context_of(job: Job, outcome: Outcome, worker_id: str, finished_at: float, *, payload_values: bool) -> ExecutionContext:
    """The context of ``job``'s current attempt ending with ``outcome`` (``finished_at``:
    seconds since the epoch, when the writer saw it)."""
    keys, payload = payload_summary(job.payload, values=payload_values)
    started = job.started_at.timestamp() if job.started_at is not None else None
    duration = max(0.0, (finished_at - started) * 1000.0) if started is not None else None
    if isinstance(outcome, Failed):
        return ExecutionContext(job_id=job.id, attempt=job.attempts, queue=job.queue, task=job.task, outcome=outcome.outcome,
                                finished_at=finished_at, error_type=outcome.error_type, message=outcome.message,
                                frames=traceback_frames(outcome.traceback), duration_ms=duration, worker_id=worker_id,
                                payload_keys=keys, payload=payload)
    return ExecutionContext(job_id=job.id, attempt=job.attempts, queue=job.queue, task=job.task, outcome="completed",
                            finished_at=finished_at, duration_ms=duration, worker_id=worker_id, payload_keys=keys,
                            payload=payload)


class MemoryWriter:
    """Buffers contexts and writes them from a background thread.

    Args:
        settings: the ``memory_*`` settings.
        worker_id: recorded in each context.
        open_store: opens the store (default ``ContextStore.open``); called again after a failure.
        embedder: default ``make_embedder(settings.memory_embedder)``.
        wall: seconds since the epoch (finish times, retention); ``sample``: a number in [0, 1)
            (success sampling). Both injectable for tests.
    """

    def __init__(self, settings: Settings, worker_id: uuid.UUID | str, *,
                 open_store: Callable[[Settings, int], ContextStore] | None = None, embedder: Embedder | None = None,
                 wall: Callable[[], float] = time.time, sample: Callable[[], float] = random.random) -> None:
        self.settings = settings
        self.worker_id = str(worker_id)
        self.embedder = embedder or make_embedder(settings.memory_embedder)
        self._open_store = open_store or ContextStore.open
        self._wall = wall
        self._sample = sample
        self.counters = WriterCounters()
        self.store: ContextStore | None = None
        self._buffer: collections.deque[tuple[Job, Outcome, float]] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retry_at = 0.0
        self._backoff = 1.0
        self._retention_at = 0.0

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
        # The store is only ever used from one thread: the last flush and the close happen here.
        self._finish()

    def _finish(self) -> None:
        self.flush()
        if self.store is not None:
            self.store.close()
            self.store = None

    def flush(self) -> int:
        """Write what is buffered now, batch by batch; return how many were stored.
        Called by the thread; tests and ``close`` call it directly."""
        stored = 0
        while True:
            with self._lock:
                batch = [self._buffer.popleft() for _ in range(min(len(self._buffer), self.settings.memory_batch_size))]
            if not batch:
                break
            stored += self._write(batch)
        self._retention()
        return stored

    def _write(self, batch: list[tuple[Job, Outcome, float]]) -> int:
        store = self._usable_store()
        if store is None:
            self.counters.dropped_unavailable += len(batch)
            return 0
        try:
            contexts = [context_of(job, o, self.worker_id, at, payload_values=self.settings.memory_payload_values)
                        for job, o, at in batch]
            store.upsert(contexts, self.embedder.embed(contexts))
        except Exception as exc:  # a store failure, or a context we could not build: drop, count, go on
            self._failed(exc, len(batch))
            return 0
        self.counters.stored += len(batch)
        self._backoff = 1.0
        return len(batch)

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
        if self.counters.store_errors:
            self.counters.reconnects += 1
            log.warning("execution memory: the %s is back", self.store.where)
        return self.store

    def _failed(self, exc: BaseException, dropped: int) -> None:
        self.counters.store_errors += 1
        self.counters.dropped_unavailable += dropped
        self.counters.last_error = f"{type(exc).__name__}: {exc}"
        if self.counters.store_errors == 1 or self.counters.store_errors % 100 == 0:
            log.warning("execution memory unavailable (%s); %d context(s) dropped so far, retrying in %.0f s",
                        self.counters.last_error, self.counters.dropped_unavailable, self._backoff)
        if self.store is not None:
            self.store.close()
            self.store = None
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, 60.0)

    def _retention(self) -> None:
        now = self._wall()
        if self.store is None or now < self._retention_at:
            return
        self._retention_at = now + RETENTION_EVERY
        try:
            self.store.delete_older_than(now - self.settings.memory_retention_seconds)
        except Exception as exc:
            self._failed(exc, 0)

    def retry_now(self) -> None:
        """Forget the pause after a failure: the next flush tries the store again."""
        self._retry_at = 0.0

    def close(self, timeout: float = 5.0) -> None:
        """Stop: write what is left and close the store, waiting up to ``timeout`` seconds.

        With a writer thread, the thread does it (the store is never used from two
        threads at once: qdrant-client's local mode is not safe for that); past the
        timeout it goes on alone (a daemon thread) and ``close`` returns.
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
