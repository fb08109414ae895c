"""memory: the execution memory (issue 12) — store and search latency, and its cost on a burn-down.

Latency (local mode, lexical embedder, contexts built from tests/data's
labelled failures with fresh ids): ``ContextStore.upsert`` of 1, 10 and 100
contexts into an on-disk local store; embed + ``search(k=5)`` over
``--points`` contexts (and 10,000) with the in-process index local mode uses,
and over 10,000 (or fewer ``--points``) with qdrant-client's own local scan.

Cost: a burn-down of ``--jobs`` no-op jobs, one in ten raising
(``max_attempts=1``), by one in-process worker (``--concurrency``), memory off,
on with the writer in a process of its own (the default) and on with it in a
thread of the worker, alternately for ``--rounds`` rounds, the bench schema
recreated before each run: wall time, database processing time, the worker
process's CPU time per job and its children's (the writer's process), medians
per mode.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

import click

from .. import memory_cost, memory_latency, options
from ..common import Env, Run, envelope, reset_schema
from ..names import SCHEMA

NAME = "memory"
PARAMS = [
    options.jobs(5000, "Jobs of each burn-down (one in ten fails)."),
    options.number("--rounds", 3, "Burn-downs per mode (off, process, thread; alternating)."),
    options.number("--points", 100000, "Contexts stored before the search is timed.", click.IntRange(1)),
    options.number("--concurrency", 8, "Jobs run at once by the worker."),
]
ALL: list[dict[str, Any]] = []  # run by name: `pgq bench memory`


def run(env: Env, tmp: Path, *, jobs: int, rounds: int, points: int, concurrency: int) -> Run:
    from pgq.memory.embedders import LexicalEmbedder

    embedder = LexicalEmbedder()
    pool = memory_latency.contexts(max(points, 2000))
    small = min(10_000, points)  # qdrant-client's scan is timed here only: at 100k it takes minutes
    env.say(f"memory: latency at {points:,} points; {rounds} burn-downs of {jobs:,} jobs per mode")
    latency = {"store": memory_latency.store_latency(embedder, pool[-2000:]),
               "search_indexed": memory_latency.search_latency(embedder, pool, sorted({small, points}), True),
               "search_qdrant_scan": memory_latency.search_latency(embedder, pool, [small], False)}
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in memory_cost.MODES}
    for _ in range(max(1, rounds)):
        for mode in memory_cost.MODES:
            reset_schema(env)
            with tempfile.TemporaryDirectory(dir=tmp) as path:
                runs[mode].append(memory_cost.burn_down(env.url, jobs, concurrency, None if mode == "off" else path,
                                                        SCHEMA, writer="thread" if mode == "thread" else "process"))
    cost = {key: {mode: statistics.median(r[key] for r in rs) for mode, rs in runs.items()}
            for key in ("seconds", "processing_seconds", "cpu_ms_per_job", "child_cpu_ms_per_job")}
    metrics = {"latency": latency, "cost": cost, "runs": runs,
               "overhead_percent": {key: {mode: round(100 * (v[mode] / v["off"] - 1), 1) for mode in ("process", "thread")}
                                    for key, v in cost.items() if key != "child_cpu_ms_per_job"}}
    return Run(envelope(env, NAME, {"jobs": jobs, "rounds": rounds, "points": points, "concurrency": concurrency}, metrics))


def rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    latency, cost, over = record["latency"], record["cost"], record["overhead_percent"]
    out = [(f"upsert {size.split('_')[1]} (on-disk local store)", f"p50 {v['p50_ms']} ms, p99 {v['p99_ms']} ms")
           for size, v in latency["store"].items()]
    out += [(f"embed + search k=5, {key.split('_')[1]} points (index)", f"p50 {v['p50_ms']} ms, p99 {v['p99_ms']} ms")
            for key, v in latency["search_indexed"].items()]
    out += [(f"embed + search k=5, {key.split('_')[1]} points (Qdrant local scan)", f"p50 {v['p50_ms']} ms, p99 {v['p99_ms']} ms")
            for key, v in latency["search_qdrant_scan"].items()]
    out += [(f"burn-down {label}, off -> writer in a {mode} (median)",
             f"{cost[key]['off']} -> {cost[key][mode]} ({over[key][mode]:+} %)")
            for key, label in (("seconds", "wall s"), ("processing_seconds", "processing s"), ("cpu_ms_per_job", "CPU ms/job"))
            for mode in ("process", "thread")]
    out += [("burn-down CPU ms/job of the writer's process (median)", f"{cost['child_cpu_ms_per_job']['process']}")]
    return out
