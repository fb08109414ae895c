"""graph: a job graph of N jobs (fan-out, fan-in, chains) against N independent jobs.

The graph is made of blocks of 100 jobs: a root, a fan-out of 48 children, a
join waiting for all 48 (fan-in), then a chain of 50 jobs one after another.
It is enqueued in one ``enqueue_many`` call (``pgq.ref``; timed apart as
``graph_enqueue_seconds``), then W worker processes x C burn it down in burst
mode, each completion releasing the children it was the last parent of. Then
the same number of independent jobs (no ``depends_on``) is burnt down by the
same workers. Measured: ``graph_jobs_per_s``, ``independent_jobs_per_s`` and
their ratio (the target is >= 0.5), with integrity (every job completed once)
for both.

A chain runs one job at a time: a block's 50-job chain takes 50 claim and
completion round trips in sequence, so a graph of fewer blocks than worker
slots is bounded by that latency, not by throughput.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pgq
from pgq.db import quote_ident

from .. import options
from ..common import Env, Run, envelope, ratio, reset_schema
from ..measure import Workers, burn_down, preload
from ..names import SCHEMA, TASK
from ..report import fraction_text
from ..workload import make_queue, warm

NAME = "graph"
PARAMS = [options.jobs(10000, "Jobs in the graph (and independent jobs), a multiple of 100."),
          options.workers(1), options.concurrency(), options.batch_size()]
ALL: list[dict[str, Any]] = []  # not in `pgq bench all` (two burn-downs): run `pgq bench graph`
BLOCK, FAN = 100, 48  # per block: root + FAN children + join + chain of the rest


def block_parents(offset: int) -> list[list[int]]:
    """The parents (positions in the whole call) of each job of the block starting at ``offset``."""
    root, join = offset, offset + 1 + FAN
    parents: list[list[int]] = [[]]
    parents += [[root] for _ in range(FAN)]
    parents.append(list(range(root + 1, join)))  # the join waits for the whole fan-out
    parents += [[join + k] for k in range(BLOCK - FAN - 2)]  # the chain after it
    return parents


def graph_specs(q: pgq.Queue, jobs: int) -> list[pgq.JobSpec]:
    one = q.job_spec(TASK)
    return [q.job_spec(TASK, depends_on=[pgq.ref(p) for p in parents]) if parents else one
            for offset in range(0, jobs, BLOCK) for parents in block_parents(offset)]


def enqueue_graph(env: Env, jobs: int) -> tuple[int, int, float]:
    q = make_queue(env.settings())
    try:
        warm(q)
        specs = graph_specs(q, jobs)
        started = time.perf_counter()
        ids = q.enqueue_many(specs)
        seconds = time.perf_counter() - started
    finally:
        q.close()
    env.conn.execute(f"ANALYZE {quote_ident(SCHEMA)}.jobs")
    return min(ids), max(ids), seconds


def run(env: Env, tmp: Path, *, jobs: int, workers: int, concurrency: int, batch_size: int) -> Run:
    if jobs % BLOCK:
        raise ValueError(f"graph: --jobs must be a multiple of {BLOCK}")
    crew = Workers(workers, concurrency, batch_size)
    reset_schema(env)
    first, last, enqueue_seconds = enqueue_graph(env, jobs)
    graph, _ = burn_down(env, tmp, crew, first, last, label=f"graph burn-down, {workers} x {concurrency}")
    reset_schema(env)
    first, last = preload(env, jobs)
    independent, _ = burn_down(env, tmp, crew, first, last, label=f"independent burn-down, {workers} x {concurrency}")
    metrics: dict[str, Any] = {
        "graph_enqueue_seconds": round(enqueue_seconds, 3),
        "graph_jobs_per_s": graph["process_jobs_per_s"],
        "independent_jobs_per_s": independent["process_jobs_per_s"],
        "graph_vs_independent": ratio(graph["process_jobs_per_s"], independent["process_jobs_per_s"]),
        "graph_lost_or_duplicated": graph["lost_or_duplicated"],
        "independent_lost_or_duplicated": independent["lost_or_duplicated"],
        "phases": {"graph": _slim(graph), "independent": _slim(independent)},
    }
    settings = {"jobs": jobs, "block": BLOCK, "fan": FAN, **crew.describe()}
    return Run(envelope(env, NAME, settings, metrics))


def _slim(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != "timeline"}


def rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("graph enqueue (one enqueue_many)", f"{record['graph_enqueue_seconds']:>10} s"),
        ("graph burn-down", f"{record['graph_jobs_per_s']:>10,.0f} jobs/s"
         + fraction_text(record["graph_vs_independent"], "independent jobs")),
        ("independent burn-down", f"{record['independent_jobs_per_s']:>10,.0f} jobs/s"),
        ("lost+duplicated (graph / independent)",
         f"{record['graph_lost_or_duplicated']} / {record['independent_lost_or_duplicated']}"),
    ]
