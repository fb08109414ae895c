"""async: single enqueue from one event loop vs the sync path with threads.

Each phase enqueues ``--jobs`` jobs, one call (and one transaction) per job,
from ``--concurrency`` callers at once, and records jobs/s and the latency of
each call (p50/p99, ms):

- async: ``await q.enqueue_async()`` from ``--concurrency`` tasks on one event
  loop (psycopg's async pool; no thread);
- threads: ``q.enqueue()`` from ``--concurrency`` threads (the sync pool);
- one thread: ``q.enqueue()`` in a loop.

Both pools have ``--pool-size`` connections. The phases run interleaved
(async, threads, one thread, then again: ``--rounds`` times), the jobs table
emptied before each; the ratios are of the medians over the rounds, taken in
this one run.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .. import options
from ..common import Env, Run, empty_tables, envelope, percentiles, rate, ratio, reset_schema
from ..workload import TASK, make_queue, warm

NAME = "async"
PARAMS = [
    options.jobs(5000, "Jobs per phase (one enqueue call each)."),
    options.number("--concurrency", 100, "Concurrent callers: tasks on one loop, or threads.", click.IntRange(1)),
    options.number("--pool-size", 4, "Connections in each pool (the sync one and the async one).",
                   click.IntRange(2)),
    options.number("--rounds", 2, "Rounds of the interleaved phases.", click.IntRange(1)),
]
ALL: list[dict[str, Any]] = []  # on demand (`pgq bench async`), not part of `pgq bench all`
PHASES = ("async", "threads", "one_thread")


def run(env: Env, tmp: Path, *, jobs: int, concurrency: int, pool_size: int, rounds: int) -> Run:
    reset_schema(env)
    settings = env.settings(pool_size=pool_size)
    phases: dict[str, list[dict[str, Any]]] = {name: [] for name in PHASES}
    for _ in range(rounds):
        for name in PHASES:
            empty_tables(env)
            if name == "async":
                result = asyncio.run(_async_phase(settings, jobs, concurrency))
            else:
                result = _thread_phase(settings, jobs, concurrency if name == "threads" else 1)
            phases[name].append(result)
    median = {name: _median(runs) for name, runs in phases.items()}
    metrics: dict[str, Any] = {
        "async_jobs_per_s": median["async"]["jobs_per_s"],
        "threads_jobs_per_s": median["threads"]["jobs_per_s"],
        "one_thread_jobs_per_s": median["one_thread"]["jobs_per_s"],
        "async_vs_threads": ratio(median["async"]["jobs_per_s"], median["threads"]["jobs_per_s"]),
        "async_vs_one_thread": ratio(median["async"]["jobs_per_s"], median["one_thread"]["jobs_per_s"]),
        "median": median,
        "phases": phases,
    }
    settings_record = {"jobs": jobs, "concurrency": concurrency, "pool_size": pool_size, "rounds": rounds}
    return Run(envelope(env, NAME, settings_record, metrics))


async def _async_phase(settings: Any, jobs: int, concurrency: int) -> dict[str, Any]:
    q = make_queue(settings)
    latencies: list[float] = []
    try:
        await q.enqueue_async(TASK)  # opens the loop's pool and checks the schema
        remaining = [jobs]

        async def caller() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                started = time.perf_counter()
                await q.enqueue_async(TASK)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    finally:
        await q.aclose()
    return _result(jobs, seconds, latencies)


def _thread_phase(settings: Any, jobs: int, threads: int) -> dict[str, Any]:
    q = make_queue(settings)
    latencies: list[float] = []
    lock = threading.Lock()
    remaining = [jobs]

    def take() -> bool:
        with lock:
            remaining[0] -= 1
            return remaining[0] >= 0

    def caller(record: Callable[[float], None]) -> None:
        while take():
            started = time.perf_counter()
            q.enqueue(TASK)
            record(time.perf_counter() - started)

    try:
        warm(q)
        q.enqueue(TASK)
        callers = [threading.Thread(target=caller, args=(latencies.append,)) for _ in range(threads)]
        started = time.perf_counter()
        for t in callers:
            t.start()
        for t in callers:
            t.join()
        seconds = time.perf_counter() - started
    finally:
        q.close()
    return _result(jobs, seconds, latencies)


def _result(jobs: int, seconds: float, latencies: list[float]) -> dict[str, Any]:
    assert len(latencies) == jobs, (len(latencies), jobs)
    return {"jobs": jobs, "seconds": round(seconds, 3), "jobs_per_s": rate(jobs, seconds),
            "latency_ms": percentiles([s * 1000 for s in latencies])}


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "jobs_per_s": round(statistics.median(r["jobs_per_s"] for r in runs), 1),
        "p50_ms": round(statistics.median(r["latency_ms"]["p50"] for r in runs), 2),
        "p99_ms": round(statistics.median(r["latency_ms"]["p99"] for r in runs), 2),
    }


def rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    median = record["median"]
    n = record["settings"]["concurrency"]
    labels = {"async": f"enqueue_async, {n} tasks, 1 loop", "threads": f"enqueue, {n} threads",
              "one_thread": "enqueue, 1 thread"}
    out = [(labels[name], f"{m['jobs_per_s']:>10,.0f} jobs/s   p50 {m['p50_ms']:.2f} ms   p99 {m['p99_ms']:.2f} ms")
           for name, m in median.items()]
    out.append(("async / threads, async / 1 thread",
                f"{record['async_vs_threads']:.2f}x, {record['async_vs_one_thread']:.2f}x"))
    return out
