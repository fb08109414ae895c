"""quick: the foundation bench, what ``pgq bench`` runs without a scenario.

Enqueue ``min(1000, N/20)`` jobs one per transaction and the rest in bulk
(``enqueue_many``, 5,000 per call); burn them down with W worker processes x
C (as the throughput scenario, without the Postgres cost); then pickup
latency of ``--latency-jobs`` jobs enqueued one at a time to idle workers (as
the latency scenario, 10 ms apart).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import options
from ..common import Env, Run, envelope, reset_schema
from ..measure import Workers, burn_down, enqueue_bulk, enqueue_single, pickup_probe
from ..report import latency_text

NAME = "quick"
PARAMS = [options.jobs(20000), options.workers(2), options.concurrency(), options.batch_size(),
          options.number("--latency-jobs", 200, "Jobs enqueued one at a time to idle workers, for pickup latency.")]
ALL: list[dict[str, Any]] = []  # `all` runs the full scenarios instead


def run(env: Env, tmp: Path, *, jobs: int, workers: int, concurrency: int, batch_size: int,
        latency_jobs: int) -> Run:
    reset_schema(env)
    singles = min(1000, max(1, jobs // 20))
    one = enqueue_single(env, singles, cost=False)
    bulk = enqueue_bulk(env, jobs - singles, cost=False) if jobs > singles else None
    crew = Workers(workers, concurrency, batch_size)
    processing, series = burn_down(env, tmp, crew, one["first_id"], (bulk or one)["last_id"],
                                   label=f"processing {jobs} jobs", cost=False)
    latency, samples = (pickup_probe(env, tmp, crew, jobs=latency_jobs, gap_ms=10.0) if latency_jobs
                        else ({"pickup_latency_ms": None}, {}))
    metrics = {
        "enqueue_single_jobs_per_s": one["jobs_per_s"],
        "enqueue_bulk_jobs_per_s": bulk and bulk["jobs_per_s"],
        **{k: processing[k] for k in ("process_jobs_per_s", "process_seconds", "completed", "handler_runs",
                                      "lost_or_duplicated", "completion_lag_ms", "timeline")},
        "pickup_latency_ms": latency["pickup_latency_ms"],
    }
    series["label"] = f"quick {workers}x{concurrency}"
    if samples:
        series["latency"] = {"idle pickup": samples["pickup_latency_ms"]}
    settings = {"jobs": jobs, "latency_jobs": latency_jobs, **crew.describe()}
    return Run(envelope(env, NAME, settings, metrics), series)


def rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    out = [
        ("enqueue, one per transaction", f"{record['enqueue_single_jobs_per_s']:>10,.0f} jobs/s"),
        ("enqueue, bulk (enqueue_many)", f"{record['enqueue_bulk_jobs_per_s'] or 0:>10,.0f} jobs/s"),
        ("processing (burn-down)", f"{record['process_jobs_per_s']:>10,.0f} jobs/s ({record['process_seconds']} s)"),
        ("completed / lost+duplicated", f"{record['completed']:>10,} / {record['lost_or_duplicated']}"),
    ]
    if record["pickup_latency_ms"]:
        out.append(("pickup latency (idle)", latency_text(record["pickup_latency_ms"])))
    return out
