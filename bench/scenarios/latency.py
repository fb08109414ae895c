"""latency: pickup by idle workers of jobs enqueued one at a time.

W worker processes wait (LISTEN) with nothing to do. The bench enqueues one
job (``q.enqueue``), waits until its handler has started, pauses ``--gap-ms``
so that the workers are idle again, and sends the next (5 warm-up jobs are
not counted). ``pickup_latency_ms`` = handler start - ``time.time()`` just
before the enqueue call; ``pickup_after_commit_ms`` = handler start - the
call's return. Compared with the baseline's raw INSERT+NOTIFY pickup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import options
from ..common import Env, Run, envelope, ratio, reset_schema
from ..measure import Workers, pickup_probe
from ..report import latency_text

NAME = "latency"
PARAMS = [options.jobs(200, "Jobs enqueued one at a time."), options.workers(1), options.concurrency(),
          options.batch_size(), options.number("--gap-ms", 10.0, "Pause after each pickup.", float)]
ALL: list[dict[str, Any]] = [{}]


def run(env: Env, tmp: Path, *, jobs: int, workers: int, concurrency: int, batch_size: int, gap_ms: float) -> Run:
    reset_schema(env)
    crew = Workers(workers, concurrency, batch_size)
    metrics, series = pickup_probe(env, tmp, crew, jobs=jobs, gap_ms=gap_ms)
    base = env.latest("baseline")
    raw = base and base.get("notify_pickup_ms")
    if raw:
        mine = metrics["pickup_latency_ms"]
        metrics["vs_baseline"] = {"p50_vs_raw_notify": ratio(mine["p50"], raw["p50"], 2),
                                  "p99_vs_raw_notify": ratio(mine["p99"], raw["p99"], 2)}
    series = {"latency": {"idle pickup": series["pickup_latency_ms"]}}
    return Run(envelope(env, NAME, {"jobs": jobs, "gap_ms": gap_ms, **crew.describe()}, metrics), series)


def rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    vs = record.get("vs_baseline")
    out = [("pickup (before enqueue -> start)", latency_text(record["pickup_latency_ms"])),
           ("pickup (enqueue returned -> start)", latency_text(record["pickup_after_commit_ms"])),
           ("enqueue call", latency_text(record["enqueue_call_ms"]))]
    if vs:
        out.append(("vs raw INSERT+NOTIFY", f"p50 x{vs['p50_vs_raw_notify']}, p99 x{vs['p99_vs_raw_notify']}"))
    return out
