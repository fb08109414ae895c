"""throughput: burn-down of N pre-loaded no-op jobs by W worker processes x C.

All N jobs are in the table (``enqueue_many``, not measured) before the
worker processes, already connected, are released in burst mode. Measured:

- ``process_jobs_per_s`` = N / (last ``finished_at`` - release): every
  completion written, not just run;
- ``completion_lag_ms``: per job, ``jobs.finished_at`` - the end of its handler
  (how long a finished job waits for its completion to be written);
- integrity: completed == N and every job's handler ran exactly once;
- Postgres cost per 1,000 jobs of the burn-down (workers' start-up and
  shutdown statements included), and each figure over the baseline's raw
  SKIP LOCKED loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import options
from ..common import Env, Run, envelope, ratio, reset_schema
from ..measure import Workers, burn_down, preload
from ..report import cost_ratios, cost_text, fraction_text, latency_text

NAME = "throughput"
PARAMS = [options.jobs(20000), options.workers(1), options.concurrency(), options.batch_size()]
# `pgq bench all`: one worker process (the target's setting), then two.
ALL: list[dict[str, Any]] = [{"workers": 1}, {"workers": 2}]


def run(env: Env, tmp: Path, *, jobs: int, workers: int, concurrency: int, batch_size: int) -> Run:
    reset_schema(env)
    first, last = preload(env, jobs)
    crew = Workers(workers, concurrency, batch_size)
    metrics, series = burn_down(env, tmp, crew, first, last, label=f"burn-down, {workers} x {concurrency}")
    base = env.latest("baseline")
    if base:
        metrics["vs_baseline"] = {
            "vs_claim_loop_1conn": ratio(metrics["process_jobs_per_s"], base["claim_loop_1conn_jobs_per_s"]),
            "vs_claim_loop_2conn": ratio(metrics["process_jobs_per_s"], base["claim_loop_2conn_jobs_per_s"]),
            "cost_vs_claim_loop_1conn": cost_ratios(metrics, base["phases"]["claim_loop_1conn"]),
        }
    series["label"] = f"throughput {workers}x{concurrency}"
    return Run(envelope(env, NAME, {"jobs": jobs, **crew.describe()}, metrics), series)


def rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    vs = record.get("vs_baseline", {})
    return [
        ("processing (burn-down)", f"{record['process_jobs_per_s']:>10,.0f} jobs/s ({record['process_seconds']} s)"
         + fraction_text(vs.get("vs_claim_loop_1conn"), "raw loop, 1 connection")),
        ("Postgres cost", cost_text(record).strip() or "not measured"),
        ("completion written after handler", latency_text(record["completion_lag_ms"])),
        ("completed / lost+duplicated", f"{record['completed']:>10,} / {record['lost_or_duplicated']}"),
    ]
