"""Child processes held at a start line, and the 100 ms sampler that follows them.

Children are started with the *fork* start method before the parent opens a
connection pool (a pool has threads, which fork does not copy); each child
opens its own connections, signals ``ready`` and waits for ``go``. Each has a
shared counter (jobs done, jobs sent) the parent reads without a lock.

Worker groups can also be started *fresh* (the *spawn* start method: a new
interpreter that imports ``pgq.cli``, as ``pgq worker`` does, and the bench's
``workload``), for the memory figures of the scale scenario: a forked child's
RSS counts every page of the bench parent (numpy, the records of earlier runs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import signal
import sys
import time
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import pgq

from .common import Progress
from .workload import Line, WorkerSpec, worker_main

# A fresh worker process: pgq's own loader finds the bench, then only workload is imported.
_FRESH_WORKER = """
from pgq.cli.bench import load_bench
workload = load_bench().workload
workload.worker_main(workload.WorkerSpec(**spec), workload.Line(*line))
"""


@contextlib.contextmanager
def _without_main() -> Iterator[None]:
    """Hide the parent's ``__main__`` while children start: a spawned child would otherwise
    run the parent's main script again (``pgq``, pytest, a user's script) before its target."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


class Children:
    """``len(args)`` processes running ``target(*args[i], line_i)`` (see ``workload.Line``)."""

    dumps_stacks = False  # True when the target installs a SIGUSR1 stack dump (pgq workers)

    def __init__(self, target: Callable[..., None], args: list[tuple[Any, ...]], name: str,
                 method: str = "fork") -> None:
        self.method = method
        ctx: Any = multiprocessing.get_context(method)
        self.go = ctx.Event()
        self.lines = [Line(ctx.Value("q", 0, lock=False), ctx.Value("d", 0.0, lock=False), ctx.Event(), self.go)
                      for _ in args]
        launches = [self._launch(target, a, line) for a, line in zip(args, self.lines, strict=True)]
        self.procs = [ctx.Process(target=t, args=a, name=f"{name}-{i}", daemon=True)
                      for i, (t, a) in enumerate(launches)]

    def _launch(self, target: Callable[..., None], args: tuple[Any, ...], line: Line) -> tuple[Any, tuple[Any, ...]]:
        """The process's target and arguments."""
        return target, (*args, line)

    def start(self, timeout: float = 60.0) -> None:
        """Start the children and wait until each is connected and ready."""
        with _without_main() if self.method == "spawn" else contextlib.nullcontext():
            for p in self.procs:
                p.start()
        deadline = time.monotonic() + timeout
        for p, line in zip(self.procs, self.lines, strict=True):
            while not line.ready.wait(0.05):
                if not p.is_alive() or time.monotonic() > deadline:
                    self.kill()
                    raise pgq.PgqError(f"bench process {p.name} did not start (exit code {p.exitcode})")

    def release(self) -> float:
        """Let every child go; return the wall-clock time of the start."""
        started = time.time()
        self.go.set()
        return started

    def done(self) -> int:
        return sum(line.counter.value for line in self.lines)

    def stamps(self) -> list[float]:
        return [line.stamp.value for line in self.lines]

    def alive(self) -> bool:
        return any(p.is_alive() for p in self.procs)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def stop(self) -> None:
        """SIGTERM: a pgq worker stops claiming, finishes its jobs and writes their outcomes."""
        for p in self.procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)

    def join(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
        if self.alive():
            self.abort()
            raise pgq.PgqError(f"bench processes did not exit within {timeout} s (their stacks are on stderr)")
        failed = [f"{p.name} ({p.exitcode})" for p in self.procs if p.exitcode != 0]
        if failed:
            raise pgq.PgqError(f"bench processes failed: {', '.join(failed)}")

    def abort(self) -> None:
        """Children that hang: have pgq workers print every thread's stack (to stderr), then kill."""
        for p in self.procs:
            if p.is_alive() and p.pid is not None and self.dumps_stacks:
                os.kill(p.pid, signal.SIGUSR1)
        if self.dumps_stacks:
            time.sleep(1.0)  # let them write
        self.kill()

    def kill(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.kill()
                p.join(5)


class WorkerGroup(Children):
    """``processes`` pgq worker processes x ``concurrency``, running the bench job; forked,
    or with ``fresh`` started as new interpreters."""

    dumps_stacks = True

    def __init__(self, settings: pgq.Settings, tmp: Path, *, processes: int, concurrency: int, batch_size: int,
                 burst: bool, sleep_ms: float = 0.0, fresh: bool = False) -> None:
        self.fresh = fresh
        self.paths = [str(tmp / f"worker-{i}-{time.monotonic_ns()}.bin") for i in range(processes)]
        specs = [(WorkerSpec(settings, concurrency, batch_size, burst, sleep_ms, path),) for path in self.paths]
        super().__init__(worker_main, specs, "pgq-bench-worker", "spawn" if fresh else "fork")

    def _launch(self, target: Callable[..., None], args: tuple[Any, ...], line: Line) -> tuple[Any, tuple[Any, ...]]:
        if not self.fresh:
            return super()._launch(target, args, line)
        # A new interpreter cannot unpickle the bench's own classes before pgq has loaded
        # the bench, so it gets plain values and a bootstrap run by exec().
        (spec,) = args
        fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
        return exec, (_FRESH_WORKER, {"spec": fields, "line": (line.counter, line.stamp, line.ready, line.go)})


def read_records(paths: list[str]) -> np.ndarray:
    """Rows of (job id, time a, time b) written by the children (``workload.Recorder``)."""
    parts = [np.fromfile(p, dtype=np.float64).reshape(-1, 3) for p in paths if os.path.exists(p)]
    return np.concatenate(parts) if parts else np.empty((0, 3))


def follow(groups: Sequence[Children], started: float, *, until: Callable[[list[int], float], bool],
           timeout: float, progress: Progress | None = None, every: Callable[[float], None] | None = None,
           interval: float = 0.1) -> list[list[float]]:
    """Sample the groups' counters every ``interval`` s until ``until(counts, elapsed)`` or
    every process of the first group exited; return the timeline of
    [seconds since start, count of group 0, count of group 1, ...]."""
    timeline: list[list[float]] = []
    tick = time.monotonic()
    while True:
        counts, elapsed = [g.done() for g in groups], time.time() - started
        timeline.append([round(elapsed, 3), *counts])
        if progress is not None:
            progress.to(counts[0])
        if until(counts, elapsed) or not groups[0].alive():
            return timeline
        if elapsed > timeout:
            for g in groups:
                g.abort()
            raise pgq.PgqError(f"bench run did not finish within {timeout} s ({counts} done)")
        if every is not None:
            every(elapsed)
        tick += interval
        time.sleep(max(0.0, tick - time.monotonic()))  # the sampling period
