"""rules: the claim rules of issue 10 — their cost, the accuracy of limits, fair share.

Phases, each on a fresh schema, W worker processes x C in burst mode:

- ``plain``: N jobs on a queue without a policy (the baseline of this run);
- ``ruled``: the same with a policy that never binds (max_running 1,000,000):
  the cost of a ruled queue's claim (its rule row lock, the running count);
- ``rate``: a rate limit of R claims per second on R x S jobs: the measured
  rate over the burn-down against R (accuracy);
- ``concurrency``: max_running M: a sampler reads the running count every
  5 ms (the peak must never pass M), and the throughput it leaves;
- ``fairness`` (off, then on): a tenant with a backlog of B jobs and a tenant
  offering 50 jobs/s for D seconds, W x C running non-burst workers; the small
  tenant's pickup (started_at - created_at, both database times) p50/p99.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from pgq.db import quote_ident

from .. import options
from ..common import Env, Run, envelope, percentiles, ratio, reset_schema
from ..measure import Workers, burn_down, preload, wait_listening
from ..names import BENCH_QUEUE, SCHEMA, TASK
from ..workload import make_queue

NAME = "rules"
PARAMS = [options.jobs(20000, "Jobs of the plain and ruled burn-downs."), options.workers(1),
          options.concurrency(), options.batch_size()]
ALL: list[dict[str, Any]] = []  # not in `pgq bench all`: run `pgq bench rules -w 1` and `-w 4`
RATE, RATE_SECONDS, MAX_RUNNING = 1000, 10, 8
BACKLOG, TRICKLE_PER_S, TRICKLE_SECONDS = 100_000, 50, 15


def _policy(env: Env, **rules: Any) -> None:
    q = make_queue(env.settings())
    try:
        q.set_queue_policy(BENCH_QUEUE, **rules)
    finally:
        q.close()


def _burn(env: Env, tmp: Path, crew: Workers, jobs: int, label: str, *, sample: bool = False,
          **rules: Any) -> dict[str, Any]:
    """A burn-down of ``jobs`` fresh jobs under ``rules``; with ``sample``, the running
    counts seen every 5 ms during it (``running_seen``)."""
    reset_schema(env)
    first, last = preload(env, jobs)
    if rules:
        _policy(env, **rules)
    sampler = RunningSampler(env)
    if sample:
        sampler.thread.start()
    try:
        metrics, _ = burn_down(env, tmp, crew, first, last, label=label, cost=False)
    finally:
        if sample:
            sampler.stop.set()
            sampler.thread.join(10)
    out = {k: v for k, v in metrics.items() if k != "timeline"}
    if sample:
        out["running_seen"] = sampler.seen
    return out


class RunningSampler:
    """Reads the number of running jobs every 5 ms on a connection of its own, in a thread."""

    def __init__(self, env: Env) -> None:
        self.url = env.settings().database_url
        self.seen: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="running-sampler", daemon=True)

    def _run(self) -> None:
        sql = f"SELECT count(*) FROM {quote_ident(SCHEMA)}.jobs WHERE status = 'running'"
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                row = conn.execute(sql).fetchone()
                self.seen.append(int(row[0]) if row else 0)
                self.stop.wait(0.005)



def _fairness(env: Env, tmp: Path, crew: Workers, *, fair: bool) -> dict[str, Any]:
    """A backlog of BACKLOG jobs of tenant "big"; "small" offers TRICKLE_PER_S jobs/s; small's pickup."""
    reset_schema(env)
    s = quote_ident(SCHEMA)
    env.conn.execute(f"INSERT INTO {s}.jobs (task, queue, group_key) SELECT %s, %s, 'big'"
                     " FROM generate_series(1, %s)", (TASK, BENCH_QUEUE, BACKLOG))
    env.conn.execute(f"ANALYZE {s}.jobs")
    if fair:
        _policy(env, fair_share=True)
    group = crew.group(env, tmp, burst=False)
    group.start()
    group.release()
    wait_listening(env, crew.processes)
    q = make_queue(env.settings())
    sent: list[int] = []
    try:
        started = time.perf_counter()
        for n in range(TRICKLE_PER_S * TRICKLE_SECONDS):
            delay = started + n / TRICKLE_PER_S - time.perf_counter()
            if delay > 0:
                time.sleep(delay)  # the producer's pace (50 jobs/s), not a wait for the system under test
            sent.append(q.enqueue(TASK, group_key="small"))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            row = env.conn.execute(f"SELECT count(*) FROM {s}.jobs WHERE id = ANY (%s) AND started_at IS NULL",
                                   (sent,)).fetchone()
            if row is not None and row[0] == 0:
                break
            time.sleep(0.2)  # polling the database for the last pickups
    finally:
        q.close()
        group.stop()
    group.join()
    rows = env.conn.execute(f"SELECT extract(epoch FROM started_at - created_at) * 1000 FROM {s}.jobs"
                            " WHERE id = ANY (%s) AND started_at IS NOT NULL", (sent,)).fetchall()
    pickup = np.asarray([r[0] for r in rows], dtype=np.float64)
    big_done = env.conn.execute(f"SELECT count(*) FROM {s}.jobs WHERE group_key = 'big'"
                                " AND status = 'completed'").fetchone()
    return {"small_pickup_ms": percentiles(pickup), "small_sent": len(sent), "small_picked_up": int(pickup.size),
            "big_completed_meanwhile": int(big_done[0]) if big_done else 0}


def run(env: Env, tmp: Path, *, jobs: int, workers: int, concurrency: int, batch_size: int) -> Run:
    crew = Workers(workers, concurrency, batch_size)
    plain = _burn(env, tmp, crew, jobs, f"plain queue, {workers} x {concurrency}")
    ruled = _burn(env, tmp, crew, jobs, "policy that never binds", max_running=1_000_000)
    rate = _burn(env, tmp, crew, RATE * RATE_SECONDS, f"rate limit {RATE}/s", rate_limit=RATE, rate_period=1.0)
    limited = _burn(env, tmp, crew, jobs // 4, f"max_running {MAX_RUNNING}", sample=True,
                    max_running=MAX_RUNNING)
    seen = limited.pop("running_seen")
    off = _fairness(env, tmp, crew, fair=False)
    on = _fairness(env, tmp, crew, fair=True)
    metrics: dict[str, Any] = {
        "plain_jobs_per_s": plain["process_jobs_per_s"],
        "ruled_jobs_per_s": ruled["process_jobs_per_s"],
        "ruled_vs_plain": ratio(ruled["process_jobs_per_s"], plain["process_jobs_per_s"]),
        "rate_limit_per_s": RATE,
        "rate_measured_per_s": rate["process_jobs_per_s"],
        "rate_accuracy": ratio(rate["process_jobs_per_s"], RATE),
        "max_running": MAX_RUNNING,
        "max_running_peak_seen": max(seen, default=0),
        "max_running_mean_seen": round(float(np.mean(seen)), 2) if seen else None,
        "max_running_jobs_per_s": limited["process_jobs_per_s"],
        "fair_off": off,
        "fair_on": on,
        "lost_or_duplicated": sum(m["lost_or_duplicated"] for m in (plain, ruled, rate, limited)),
    }
    settings = {"jobs": jobs, "rate": RATE, "rate_seconds": RATE_SECONDS, "backlog": BACKLOG,
                "trickle_per_s": TRICKLE_PER_S, "trickle_seconds": TRICKLE_SECONDS, **crew.describe()}
    return Run(envelope(env, NAME, settings, metrics))


def rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    off, on = record["fair_off"]["small_pickup_ms"], record["fair_on"]["small_pickup_ms"]
    return [
        ("plain queue burn-down", f"{record['plain_jobs_per_s']:>10,.0f} jobs/s"),
        ("policy that never binds", f"{record['ruled_jobs_per_s']:>10,.0f} jobs/s ({record['ruled_vs_plain']} of plain)"),
        ("rate limit", f"{record['rate_measured_per_s']:>10,.1f} /s for {record['rate_limit_per_s']}/s"
         f" ({record['rate_accuracy']})"),
        ("max_running peak / mean seen", f"{record['max_running_peak_seen']} / {record['max_running_mean_seen']}"
         f" for {record['max_running']}"),
        ("small tenant pickup, fair share off", f"p50 {off.get('p50')} ms, p99 {off.get('p99')} ms"),
        ("small tenant pickup, fair share on", f"p50 {on.get('p50')} ms, p99 {on.get('p99')} ms"),
        ("lost+duplicated", str(record["lost_or_duplicated"])),
    ]
