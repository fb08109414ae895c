"""The job the bench runs, and the entry points of its child processes.

Every job is ``bench.job`` with an empty payload. Its body does nothing (or
sleeps ``sleep_ms``) and records, in its own process, the job id with the
wall-clock times (``time.time()``) at which the handler started and ended.
The parent reads these records after the process exits, so recording costs
the measured run a lock and three floats per job, and no database write.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import threading
import time
from array import array
from dataclasses import dataclass
from typing import Any

import pgq

from .names import APP_PREFIX, BENCH_QUEUE, TASK

# Per process (children are forked): the recorder and the handler's sleep.
_recorder: Recorder | None = None
_sleep_seconds = 0.0


@dataclass
class Line:
    """What links a child process to the parent (shared memory, fork-inherited)."""

    counter: Any  # multiprocessing Value('q'): jobs done or sent so far, read live by the parent
    stamp: Any  # multiprocessing Value('d'): a time the child reports (when it finished)
    ready: Any  # Event: the child is connected and waits for go
    go: Any  # Event shared by a group: start


class Recorder:
    """Rows of three floats kept in this process, and a shared counter the parent reads live."""

    def __init__(self, counter: Any) -> None:
        self.rows = array("d")
        self.counter = counter
        self._lock = threading.Lock()

    def add(self, a: float, b: float, c: float) -> None:
        with self._lock:
            self.rows.extend((a, b, c))
            self.counter.value += 1

    def dump(self, path: str) -> None:
        with open(path, "wb") as f:
            self.rows.tofile(f)


def job() -> None:
    """The bench job: nothing (or a sleep), timed and recorded."""
    started = time.time()
    if _sleep_seconds:
        time.sleep(_sleep_seconds)
    ended = time.time()
    if _recorder is not None:
        _recorder.add(pgq.current_job().job.id, started, ended)


def make_queue(settings: pgq.Settings) -> pgq.Queue:
    q = pgq.Queue(settings, strict_tasks=False)
    q.task(name=TASK, queue=BENCH_QUEUE)(job)
    return q


def warm(q: pgq.Queue) -> None:
    """Open the queue's pool (and its schema check) before the clock starts, and have
    that connection's statistics flushed so they do not land inside a measured phase."""
    with q.pool.connection() as conn:
        if conn.info.server_version >= 150000:
            conn.execute("SELECT pg_stat_force_next_flush()")


@dataclass(frozen=True)
class WorkerSpec:
    settings: pgq.Settings
    concurrency: int
    batch_size: int
    burst: bool
    sleep_ms: float
    record_path: str


def worker_main(spec: WorkerSpec, line: Line) -> None:
    """One bench worker process: connect, wait for the start, run, write the records."""
    global _recorder, _sleep_seconds
    os.environ["PGAPPNAME"] = f"{APP_PREFIX}-worker"
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the parent asks for stacks when a worker hangs
    _recorder = Recorder(line.counter)
    _sleep_seconds = spec.sleep_ms / 1000.0
    q = make_queue(spec.settings)
    worker = q.worker(queues=[BENCH_QUEUE], concurrency=spec.concurrency, batch_size=spec.batch_size,
                      run_maintenance=False)
    warm(q)
    line.ready.set()
    line.go.wait()
    worker.run(burst=spec.burst)
    q.close()
    _recorder.dump(spec.record_path)


@dataclass(frozen=True)
class ProducerSpec:
    settings: pgq.Settings
    rate: float  # jobs per second offered
    jobs: int  # total to enqueue
    max_batch: int  # most jobs per enqueue_many when behind schedule
    record_path: str


def producer_main(spec: ProducerSpec, line: Line) -> None:
    """An open-loop producer: job k is due at start + k/rate; whatever is due goes in one call.

    Records (job id, time before the enqueue call, time the call returned, i.e.
    after its commit) for every job.
    """
    os.environ["PGAPPNAME"] = f"{APP_PREFIX}-producer"
    recorder = Recorder(line.counter)
    q = make_queue(spec.settings)
    one = q.job_spec(TASK)
    warm(q)
    line.ready.set()
    line.go.wait()
    start = time.time()
    sent = 0
    while sent < spec.jobs:
        due = min(spec.jobs, int((time.time() - start) * spec.rate) + 1) - sent
        if due <= 0:
            time.sleep(max(0.0, start + sent / spec.rate - time.time()))  # pacing the offered rate
            continue
        n = min(due, spec.max_batch)
        called = time.time()
        ids = [q.enqueue(TASK)] if n == 1 else q.enqueue_many([one] * n)
        returned = time.time()
        for job_id in ids:
            recorder.add(job_id, called, returned)
        sent += n
    line.stamp.value = time.time()
    q.close()
    recorder.dump(spec.record_path)
