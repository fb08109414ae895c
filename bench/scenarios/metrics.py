"""metrics: what the worker's Prometheus exporter costs (issue 11, item 7).

- Exporter cost: N pre-loaded no-op jobs burnt down by one worker process x C
  with ``PGQ_METRICS_PORT`` set and unset, interleaved (``health.paired_cost``:
  jobs/s and the worker's CPU per job, medians of the per-pair ratios). One
  process: each worker process needs a port of its own. Nothing scrapes during
  the run (a scrape costs per scrape interval, not per job).
- Job-path recording alone: the calls one job makes into the exporter
  (started, ran, completed, plus a claim and an ack of ``batch_size`` jobs
  shared out), in one thread, best of 5; next to the same with
  prometheus_client's own Counter and Histogram (label children cached), the
  design the exporter did not take.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import click

from pgq.health.worker_exporter import DURATION_BUCKETS, WorkerExporter
from pgq.job import Job, JobStatus

from .. import options
from ..common import Env, Run, envelope
from ..measure import Workers
from ..procs import WorkerGroup
from .health import cost_rows, paired_cost

NAME = "metrics"
PARAMS = [
    options.jobs(20000), options.concurrency(), options.batch_size(),
    click.Option(["--rounds"], type=click.IntRange(1, 20), default=3, show_default=True,
                 help="Pairs of burn-downs (metrics on, off), interleaved."),
]
ALL: list[dict[str, Any]] = []  # minutes of paired burn-downs: run it by name (`pgq bench metrics`)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass(frozen=True)
class ExporterWorkers(Workers):
    """The bench's workers, serving Prometheus metrics or not."""

    exporting: bool = True

    def group(self, env: Env, tmp: Path, *, burst: bool, fresh: bool = False) -> WorkerGroup:
        settings = env.settings(claim_batch_size=self.batch_size, metrics_address="127.0.0.1",
                                metrics_port=_free_port() if self.exporting else 0)
        return WorkerGroup(settings, tmp, processes=self.processes, concurrency=self.concurrency,
                           batch_size=self.batch_size, burst=burst, sleep_ms=self.sleep_ms, fresh=fresh)


def _a_job() -> Job:
    at = dt.datetime.now(dt.UTC)
    return Job(1, "bench", "noop", {}, 3, JobStatus.RUNNING, at, 1, 3, None, None, None, at, None, None, None, at, at)


def _exporter_per_job(n: int, batch: int) -> float:
    """Microseconds of CPU per job of the calls the job path makes into a ``WorkerExporter``."""
    exporter = WorkerExporter(uuid.uuid4(), None, lambda: 0)
    job = _a_job()
    jobs = [job] * batch
    started = time.process_time()
    for _ in range(n // batch):
        exporter.claimed(batch, 0.001)
        for _ in range(batch):
            exporter.started(job)
            exporter.ran(job, 0.0001)
        exporter.completed(jobs)
        exporter.acknowledged("complete", batch, 0.001)
    return (time.process_time() - started) / n * 1e6


def _client_per_job(n: int, batch: int) -> float:
    """The same recording with prometheus_client's Counter and Histogram (children cached)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram

    registry = CollectorRegistry()
    started_c = Counter("s", "s", ["queue", "task"], registry=registry).labels("bench", "noop")
    done_c = Counter("c", "c", ["queue", "task"], registry=registry).labels("bench", "noop")
    duration = Histogram("d", "d", ["queue", "task"], registry=registry, buckets=DURATION_BUCKETS).labels("bench", "noop")
    claim = Histogram("cl", "cl", registry=registry)
    ack = Histogram("a", "a", registry=registry)
    started = time.process_time()
    for _ in range(n // batch):
        claim.observe(0.001)
        for _ in range(batch):
            started_c.inc()
            duration.observe(0.0001)
        done_c.inc(batch)
        ack.observe(0.001)
    return (time.process_time() - started) / n * 1e6


def _hooks(batch: int, n: int = 200_000) -> dict[str, Any]:
    return {"exporter_us_per_job": round(min(_exporter_per_job(n, batch) for _ in range(5)), 3),
            "prometheus_client_us_per_job": round(min(_client_per_job(n, batch) for _ in range(5)), 3),
            "jobs": n, "batch": batch}


def run(env: Env, tmp: Path, *, jobs: int, concurrency: int, batch_size: int, rounds: int) -> Run:
    cost = paired_cost(env, tmp, jobs, rounds, "metrics",
                       lambda on: ExporterWorkers(1, concurrency, batch_size, exporting=on))
    metrics = {"exporter": cost, "hooks": _hooks(batch_size)}
    settings = {"jobs": jobs, "workers": 1, "concurrency": concurrency, "batch_size": batch_size, "rounds": rounds}
    return Run(envelope(env, NAME, settings, metrics), {})


def rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    h = record["hooks"]
    return [
        ("job-path recording, in-process", f"{h['exporter_us_per_job']} us CPU per job "
                                           f"(prometheus_client's own: {h['prometheus_client_us_per_job']} us)"),
        *cost_rows(record["exporter"], "metrics"),
        ("lost / duplicated", str(record["exporter"]["lost_or_duplicated"])),
    ]
