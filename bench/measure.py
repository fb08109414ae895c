"""The measurements several scenarios are made of: pre-loading jobs, a burn-down
with worker processes, idle pickup latency, and reading outcomes back.

Times on both sides are wall-clock seconds (``time.time()`` in the bench
processes; ``finished_at`` from the server, moved onto the bench's clock by
the measured offset, see ``common.clock_offset``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import pgq
from pgq.db import quote_ident

from .common import Env, Progress, clock_offset, percentiles, queue_tables, rate
from .cost import CostMeter
from .names import APP_PREFIX, SCHEMA, TASK
from .procs import Children, WorkerGroup, follow, read_records
from .workload import make_queue, warm


@dataclass(frozen=True)
class Workers:
    """How the pgq side runs: W processes x C concurrency, claim batch, job body."""

    processes: int
    concurrency: int
    batch_size: int
    sleep_ms: float = 0.0

    def group(self, env: Env, tmp: Path, *, burst: bool, fresh: bool = False) -> WorkerGroup:
        return WorkerGroup(env.settings(claim_batch_size=self.batch_size), tmp, processes=self.processes,
                           concurrency=self.concurrency, batch_size=self.batch_size, burst=burst,
                           sleep_ms=self.sleep_ms, fresh=fresh)

    def describe(self) -> dict[str, Any]:
        return {"workers": self.processes, "concurrency": self.concurrency, "batch_size": self.batch_size,
                "job_sleep_ms": self.sleep_ms}


def enqueue_single(env: Env, jobs: int, *, cost: bool = True) -> dict[str, Any]:
    """``q.enqueue()`` in a loop: one job, one statement, one commit each."""
    return _enqueue_phase(env, jobs, cost, lambda q, one, n: [q.enqueue(TASK) for _ in range(n)], chunk=100,
                          label="enqueue, one per transaction")


def enqueue_bulk(env: Env, jobs: int, *, chunk: int = 5000, cost: bool = True,
                 label: str = "enqueue, bulk") -> dict[str, Any]:
    """``q.enqueue_many()`` of ``chunk`` jobs per call (one statement, one commit each)."""
    return _enqueue_phase(env, jobs, cost, lambda q, one, n: q.enqueue_many([one] * n), chunk=chunk, label=label)


def _enqueue_phase(env: Env, jobs: int, cost: bool, send: Callable[[pgq.Queue, Any, int], list[int]],
                   chunk: int, label: str) -> dict[str, Any]:
    """Time ``send`` over ``jobs`` jobs (``chunk`` per call of ``send``) from a warmed queue; the
    pool is closed afterwards (worker processes can then be forked, and its statistics land)."""
    q = make_queue(env.settings())
    one = q.job_spec(TASK)
    meter = CostMeter(env, SCHEMA, queue_tables(env))
    ids: list[int] = []
    bar = Progress(env, jobs, label)
    try:
        warm(q)
        if cost:
            meter.start()
        started = time.perf_counter()
        for offset in range(0, jobs, chunk):
            ids.extend(send(q, one, min(chunk, jobs - offset)))
            bar.to(len(ids))
        seconds = time.perf_counter() - started
    finally:
        bar.close()
        q.close()
    result: dict[str, Any] = {"jobs": jobs, "jobs_per_s": rate(jobs, seconds), "seconds": round(seconds, 3),
                              "first_id": min(ids), "last_id": max(ids)}
    if cost:
        result["postgres_cost"] = meter.stop(jobs)
    return result


def preload(env: Env, jobs: int, chunk: int = 5000) -> tuple[int, int]:
    """Enqueue ``jobs`` bench jobs with ``enqueue_many`` (not measured) and ANALYZE the
    table, as the peers' harness does before its burn-down; return the first and last id."""
    phase = enqueue_bulk(env, jobs, chunk=chunk, cost=False, label=f"pre-loading {jobs:,} jobs")
    env.conn.execute(f"ANALYZE {quote_ident(SCHEMA)}.jobs")
    return phase["first_id"], phase["last_id"]


def read_outcomes(env: Env, first: int, last: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Completed count, and (ids, finished_at epoch) of the completed jobs with ids in [first, last]."""
    rows = env.conn.execute(
        f"SELECT id, extract(epoch FROM finished_at)::float8 FROM {quote_ident(SCHEMA)}.jobs"
        " WHERE id BETWEEN %s AND %s AND status = 'completed'", (first, last)).fetchall()
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 2)
    return len(rows), arr[:, 0], arr[:, 1]


def by_id(keys: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """``values`` of ``keys`` looked up for each of ``wanted`` (NaN where missing; the last
    value wins for a key recorded twice)."""
    out = np.full(wanted.shape, np.nan)
    if keys.size == 0 or wanted.size == 0:
        return out
    order = np.argsort(keys, kind="stable")
    sorted_keys, sorted_values = keys[order], values[order]
    pos = np.searchsorted(sorted_keys, wanted, side="right") - 1
    ok = (pos >= 0) & (sorted_keys[np.clip(pos, 0, None)] == wanted)
    out[ok] = sorted_values[pos[ok]]
    return out


def integrity(expected: int, completed: int, runs: np.ndarray) -> dict[str, int]:
    """Lost = expected jobs not completed; duplicated = handler runs beyond one per job."""
    distinct = int(np.unique(runs[:, 0]).size) if runs.size else 0
    lost = expected - completed
    duplicated = int(runs.shape[0]) - distinct
    return {"completed": completed, "handler_runs": int(runs.shape[0]), "lost": lost,
            "duplicated": duplicated, "lost_or_duplicated": lost + duplicated}


def burn_down(env: Env, tmp: Path, workers: Workers, first: int, last: int, *, label: str,
              cost: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Release ``workers`` (burst mode) on the pre-loaded jobs [first, last]; measure until they exit.

    Returns (metrics, series). ``process_seconds`` runs from the release to the
    last ``finished_at`` (the last completion written); the workers' exit
    (deregistration, pool close) is reported apart.
    """
    jobs = last - first + 1
    group = workers.group(env, tmp, burst=True)
    group.start()
    meter = CostMeter(env, SCHEMA, queue_tables(env))
    if cost:
        meter.start()
    offset, offset_error = clock_offset(env)
    bar = Progress(env, jobs, label)
    started = group.release()
    try:
        timeline = follow([group], started, until=lambda counts, elapsed: False, timeout=600 + jobs / 100, progress=bar)
    finally:
        bar.close()
    group.join()
    exited = time.time() - started
    spent = meter.stop(jobs) if cost else None
    runs = read_records(group.paths)
    completed, ids, finished = read_outcomes(env, first, last)
    finished = finished - offset  # onto the bench's clock
    lag_ms = (finished - by_id(runs[:, 0], runs[:, 2], ids)) * 1000.0
    seconds = float(finished.max() - started) if finished.size else float("nan")
    metrics = {
        "jobs": jobs,
        "process_jobs_per_s": rate(jobs, seconds),
        "process_seconds": round(seconds, 3),
        "handler_jobs_per_s": rate(jobs, float(runs[:, 2].max() - started)) if runs.size else None,
        "workers_exited_seconds": round(exited, 3),
        "completion_lag_ms": percentiles(lag_ms[~np.isnan(lag_ms)]),
        **integrity(jobs, completed, runs),
        "clock_offset_ms": round(offset * 1000, 3),
        "clock_offset_error_ms": round(offset_error * 1000, 3),
        "timeline": timeline,
    }
    if spent is not None:
        metrics["postgres_cost"] = spent
    series = {"timeline": timeline, "completion_lag_ms": lag_ms[~np.isnan(lag_ms)]}
    return metrics, series


def wait_listening(env: Env, processes: int, timeout: float = 10.0) -> bool:
    """Wait until ``processes`` bench worker connections sit in LISTEN (True), or give up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (n,) = env.conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = %s AND state = 'idle' AND query ILIKE 'LISTEN%%'",
            (f"{APP_PREFIX}-worker",)).fetchone()
        if n >= processes:
            return True
        time.sleep(0.05)
    return False


def pickup_probe(env: Env, tmp: Path, workers: Workers, *, jobs: int, gap_ms: float, warmup: int = 5,
                 label: str = "pickup latency") -> tuple[dict[str, Any], dict[str, Any]]:
    """Idle workers; jobs enqueued one at a time, each after the previous one started plus a gap.

    pickup = handler start - ``time.time()`` just before the enqueue call;
    after_commit = handler start - the moment the enqueue call returned.
    """
    group = workers.group(env, tmp, burst=False)
    group.start()
    group.release()
    listening = wait_listening(env, workers.processes)
    q = make_queue(env.settings())  # opened after the fork
    try:
        measured = one_at_a_time(env, group, lambda: q.enqueue(TASK), jobs=jobs, warmup=warmup, gap_ms=gap_ms,
                                 label=label)
    finally:
        q.close()
        group.stop()
    group.join()
    runs = read_records(group.paths)
    started = by_id(runs[:, 0], runs[:, 1], measured[:, 0])
    pickup = (started - measured[:, 1]) * 1000.0
    after_commit = (started - measured[:, 2]) * 1000.0
    metrics = {
        "jobs": jobs,
        "gap_ms": gap_ms,
        "pickup_latency_ms": percentiles(pickup[~np.isnan(pickup)]),
        "pickup_after_commit_ms": percentiles(after_commit[~np.isnan(after_commit)]),
        "enqueue_call_ms": percentiles((measured[:, 2] - measured[:, 1]) * 1000.0),
        "picked_up": int((~np.isnan(started)).sum()),
        "listen_seen": listening,
    }
    return metrics, {"pickup_latency_ms": pickup[~np.isnan(pickup)]}


def one_at_a_time(env: Env, group: Children, send: Callable[[], int], *, jobs: int, warmup: int, gap_ms: float,
                  label: str) -> np.ndarray:
    """Send ``warmup + jobs`` jobs one at a time: each after the previous one was picked up
    (the group's counter moved) and ``gap_ms`` more. Return rows of (job id, time before
    the send, time it returned) for the measured jobs."""
    sent: list[tuple[int, float, float]] = []
    bar = Progress(env, jobs, label)
    try:
        for i in range(warmup + jobs):
            called = time.time()
            job_id = send()
            sent.append((job_id, called, time.time()))
            _wait_count(group, i + 1, timeout=30.0)
            time.sleep(gap_ms / 1000.0)  # pacing: the next job finds the consumer idle again
            bar.to(i + 1 - warmup)
    finally:
        bar.close()
    return np.asarray(sent[warmup:], dtype=np.float64).reshape(-1, 3)


def _wait_count(group: Children, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while group.done() < n:
        if time.monotonic() > deadline or not group.alive():
            raise pgq.PgqError(f"bench job {n} was not picked up within {timeout} s")
        time.sleep(0.0005)  # polling a shared counter; the latency is measured by the handler's clock
