"""steady: producers and workers together, at an offered rate.

A producer process offers ``--rate`` jobs/s for ``--duration`` s, open loop:
job k is due at start + k/rate, and whatever is due is sent in one call
(``enqueue`` for one job, ``enqueue_many`` when several are due). W worker
processes x C run a job body that sleeps ``--sleep-ms``. Measured:

- ``processed_jobs_per_s``: handlers that ended within the offered window, per
  second of it (the achieved rate), next to the offered and produced rates;
- ``pickup_latency_ms``: handler start - the enqueue call's return (its commit);
- ``end_to_end_ms``: ``jobs.finished_at`` - just before the enqueue call;
- ``completion_lag_ms``: ``finished_at`` - handler end; ``drain_seconds``: from
  the last enqueue to the last handler end.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from .. import options
from ..common import Env, Progress, Run, clock_offset, envelope, percentiles, rate, reset_schema
from ..measure import Workers, by_id, integrity, read_outcomes, wait_listening
from ..procs import Children, follow, read_records
from ..report import latency_text
from ..workload import ProducerSpec, producer_main

NAME = "steady"
PARAMS = [
    options.number("--rate", 5000.0, "Jobs per second offered.", click.FloatRange(1)),
    options.duration(10.0),
    options.workers(2), options.concurrency(), options.batch_size(), options.sleep_ms(1.0),
]
ALL: list[dict[str, Any]] = [{"duration": 5.0}]


def run(env: Env, tmp: Path, *, rate: float, duration: float, workers: int, concurrency: int, batch_size: int,
        sleep_ms: float) -> Run:
    reset_schema(env)
    total = max(1, int(rate * duration))
    crew = Workers(workers, concurrency, batch_size, sleep_ms)
    group = crew.group(env, tmp, burst=False)
    path = str(tmp / f"producer-{time.monotonic_ns()}.bin")
    producer = Children(producer_main, [(ProducerSpec(env.settings(), rate, total, 500, path),)],
                        "pgq-bench-producer")
    group.start()
    producer.start()
    group.release()
    wait_listening(env, workers)
    offset, _ = clock_offset(env)
    bar = Progress(env, total, f"steady {rate:,.0f} jobs/s offered")
    started = producer.release()
    try:
        timeline = follow([group, producer], started, until=lambda c, _: c[1] >= total and c[0] >= total,
                          timeout=duration * 10 + 60, progress=bar)
    finally:
        bar.close()
        group.stop()
    group.join()
    producer.join()
    metrics, series = _metrics(env, read_records([path]), read_records(group.paths), started,
                               producer.stamps()[0], offset, duration)
    metrics["offered_jobs_per_s"] = rate
    metrics["timeline"] = timeline
    series.update(timeline=timeline, label=f"steady {rate:,.0f}/s offered")
    settings = {"rate": rate, "duration": duration, **crew.describe()}
    return Run(envelope(env, NAME, settings, metrics), series)


def _metrics(env: Env, sent: np.ndarray, runs: np.ndarray, started: float, produced_at: float, offset: float,
             duration: float) -> tuple[dict[str, Any], dict[str, Any]]:
    completed, ids, finished = read_outcomes(env, int(sent[:, 0].min()), int(sent[:, 0].max()))
    finished = finished - offset
    handler_start = by_id(runs[:, 0], runs[:, 1], sent[:, 0])
    pickup = (handler_start - sent[:, 2]) * 1000.0
    e2e = (by_id(ids, finished, sent[:, 0]) - sent[:, 1]) * 1000.0
    lag = (finished - by_id(runs[:, 0], runs[:, 2], ids)) * 1000.0
    ends = runs[:, 2]
    metrics = {
        "jobs": int(sent.shape[0]),
        "produced_jobs_per_s": rate(sent.shape[0], produced_at - started),
        "processed_jobs_per_s": rate(int((ends <= started + duration).sum()), duration),
        "drain_seconds": round(float(ends.max() - produced_at), 3) if ends.size else None,
        "pickup_latency_ms": percentiles(pickup[~np.isnan(pickup)]),
        "end_to_end_ms": percentiles(e2e[~np.isnan(e2e)]),
        "completion_lag_ms": percentiles(lag[~np.isnan(lag)]),
        **integrity(int(sent.shape[0]), completed, runs),
    }
    series = {"latency": {"steady pickup (from commit)": pickup[~np.isnan(pickup)],
                          "steady end-to-end": e2e[~np.isnan(e2e)]},
              "completion_lag_ms": lag[~np.isnan(lag)]}
    return metrics, series


def rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("offered / produced / processed",
         f"{record['offered_jobs_per_s']:,.0f} / {record['produced_jobs_per_s']:,.0f} / "
         f"{record['processed_jobs_per_s']:,.0f} jobs/s (drained {record['drain_seconds']} s after the last enqueue)"),
        ("pickup (enqueue commit -> start)", latency_text(record["pickup_latency_ms"])),
        ("end to end (enqueue -> written)", latency_text(record["end_to_end_ms"])),
        ("completion written after handler", latency_text(record["completion_lag_ms"])),
        ("completed / lost+duplicated", f"{record['completed']:,} / {record['lost_or_duplicated']}"),
    ]
