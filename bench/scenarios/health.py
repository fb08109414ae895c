"""health: what worker health costs (issue 11): burn-down with health sampling on vs off, and the analysis.

- Sampling cost: N pre-loaded no-op jobs burnt down by W worker processes x C,
  with ``PGQ_HEALTH_SAMPLING`` on and off, interleaved (on/off, then off/on, ...
  for ``--rounds`` pairs; heartbeats every second so that samples are sent
  during the run). ``cost_percent`` = 1 - the median of the per-pair ratios
  of jobs/s (on / off), in %: on a noisy shared machine a ratio of two
  neighbouring runs is steadier than two medians. ``cpu_cost_percent``: the
  same for the worker processes' CPU time per job (user + system, from
  ``getrusage(RUSAGE_CHILDREN)``), which other load on the machine disturbs less.
- Job-path recording alone: the CPU time of the calls the job path makes
  per job with sampling on, in one thread (best of 5 x 200,000).
- Analysis: ``--fleet-workers`` workers x ``--fleet-samples`` samples (1,000 x
  120 = an hour at 30 s) of synthetic metrics: the time to recompute every
  score (``pgq.health.score``), find the anomalies and fit the predictions
  (``pgq.health.analysis.analyse``), best and median of 5; and the time to
  read those samples from Postgres (``HealthQueries.recent_samples`` +
  ``SampleSet.from_rows``) after inserting them.
"""

from __future__ import annotations

import dataclasses
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from pgq.health import analysis
from pgq.health.queries import HealthQueries
from pgq.health.samples import SampleSet
from pgq.health.score import health_score, latency_baseline

from .. import options
from ..common import SCHEMA, Env, Run, envelope, reset_schema
from ..measure import Workers, burn_down, preload
from ..procs import WorkerGroup

NAME = "health"
PARAMS = [
    options.jobs(20000), options.workers(1), options.concurrency(), options.batch_size(),
    click.Option(["--rounds"], type=click.IntRange(1, 20), default=3, show_default=True,
                 help="Pairs of burn-downs (sampling on, off), interleaved."),
    click.Option(["--fleet-workers"], type=click.IntRange(1, 100000), default=1000, show_default=True,
                 help="Workers in the analysis timing."),
    click.Option(["--fleet-samples"], type=click.IntRange(6, 10000), default=120, show_default=True,
                 help="Samples per worker in the analysis timing."),
]
ALL: list[dict[str, Any]] = []  # minutes of paired burn-downs: run it by name (`pgq bench health`)


@dataclasses.dataclass(frozen=True)
class SamplingWorkers(Workers):
    """The bench's workers with health sampling switched, heartbeating every second."""

    sampling: bool = True

    def group(self, env: Env, tmp: Path, *, burst: bool, fresh: bool = False) -> WorkerGroup:
        settings = env.settings(claim_batch_size=self.batch_size, health_sampling=self.sampling,
                                heartbeat_interval_seconds=1.0)
        return WorkerGroup(settings, tmp, processes=self.processes, concurrency=self.concurrency,
                           batch_size=self.batch_size, burst=burst, sleep_ms=self.sleep_ms, fresh=fresh)


def _sampling_cost(env: Env, tmp: Path, jobs: int, workers: int, concurrency: int, batch_size: int,
                   rounds: int) -> dict[str, Any]:
    return paired_cost(env, tmp, jobs, rounds, "sampling",
                       lambda on: SamplingWorkers(workers, concurrency, batch_size, sampling=on))


def paired_cost(env: Env, tmp: Path, jobs: int, rounds: int, what: str,
                crew_of: Callable[[bool], Workers]) -> dict[str, Any]:
    """Burn-downs of ``jobs`` no-op jobs by ``crew_of(True)`` and ``crew_of(False)``, interleaved
    (on/off, then off/on, ...), ``rounds`` pairs: jobs/s and worker CPU per job, with the
    medians of the per-pair ratios (see the module docstring). ``what`` names the switch."""
    rates: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}  # worker processes' CPU per job (us)
    lost = 0
    for r in range(rounds):
        for on in ((True, False) if r % 2 == 0 else (False, True)):
            reset_schema(env)
            first, last = preload(env, jobs)
            crew = crew_of(on)
            label = f"burn-down, {what} {'on' if on else 'off'} ({r + 1}/{rounds})"
            before = _children_cpu()
            metrics, _ = burn_down(env, tmp, crew, first, last, label=label, cost=False)
            cpu[on].append(round((_children_cpu() - before) / jobs * 1e6, 2))
            rates[on].append(metrics["process_jobs_per_s"])
            lost += metrics["lost_or_duplicated"]
    ratios = [on / off for on, off in zip(rates[True], rates[False], strict=True)]
    cpu_ratios = [on / off for on, off in zip(cpu[True], cpu[False], strict=True)]
    median = statistics.median(ratios)
    return {"jobs_per_s_on": rates[True], "jobs_per_s_off": rates[False],
            "ratios_on_over_off": [round(x, 4) for x in ratios], "median_ratio": round(median, 4),
            "cost_percent": round((1 - median) * 100, 2),
            "cpu_us_per_job_on": cpu[True], "cpu_us_per_job_off": cpu[False],
            "cpu_ratios_on_over_off": [round(x, 4) for x in cpu_ratios],
            "cpu_cost_percent": round((statistics.median(cpu_ratios) - 1) * 100, 2), "lost_or_duplicated": lost}


def _hooks_per_job(n: int = 200_000) -> dict[str, Any]:
    """CPU time of what the job path records per job with sampling on, in one thread: two clock
    reads around the handler and the run time into the reservoir (the acknowledger's share is
    per batch); best of 5 (microseconds per job, the loop's own cost included)."""
    from pgq.clock import SystemClock
    from pgq.worker.metrics import WorkerMetrics

    clock = SystemClock()
    best = float("inf")
    for _ in range(5):
        metrics = WorkerMetrics()
        started = time.process_time()
        for _job in range(n):
            began = clock.monotonic()
            metrics.job_finished(clock.monotonic() - began)
        best = min(best, (time.process_time() - started) / n * 1e6)
    return {"us_per_job": round(best, 3), "jobs": n}


def _children_cpu() -> float:
    """CPU seconds (user + system) of the bench's child processes that have exited and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _fleet(workers: int, samples: int, seed: int = 1) -> tuple[SampleSet, dict[str, np.ndarray]]:
    """Synthetic samples: healthy noise, one worker in 50 slowing down, one in 100 failing more."""
    rng = np.random.default_rng(seed)
    shape = (workers, samples)
    t = np.tile(np.arange(-samples + 1, 1, dtype=float) * 30, (workers, 1))
    completed = rng.poisson(300, shape).astype(float)
    failed = rng.poisson(3, shape).astype(float)
    p50 = rng.lognormal(np.log(12), 0.15, shape)
    p50[::50] *= np.linspace(1, 6, samples)  # slowing down
    failed[::100] += np.linspace(0, 300, samples)  # failing more and more
    raw = {
        "jobs_completed": completed, "jobs_failed": failed, "error_rate": failed / (completed + failed),
        "latency_p50_ms": p50, "latency_p95_ms": p50 * 3, "claim_rtt_ms": rng.lognormal(0, 0.2, shape),
        "ack_rtt_ms": rng.lognormal(0.3, 0.2, shape), "ack_lag_ms": rng.lognormal(2, 0.3, shape),
        "in_flight": rng.integers(0, 16, shape).astype(float), "capacity": np.full(shape, 16.0),
        "stuck_handlers": np.zeros(shape), "rss_bytes": rng.normal(60e6, 1e6, shape),
        "cpu_percent": rng.normal(40, 5, shape),
    }
    queues = [(f"q{i % 10}",) for i in range(workers)]
    return SampleSet.from_arrays(t, raw, queues=queues), raw


def _analyse_all(samples: SampleSet, raw: dict[str, np.ndarray]) -> int:
    """Scores from the raw metrics (baseline per worker), then anomalies and predictions."""
    baseline = latency_baseline(raw["latency_p50_ms"], axis=1)[:, None]
    scores = health_score(completed=raw["jobs_completed"], failed=raw["jobs_failed"],
                          latency_p50_ms=raw["latency_p50_ms"], baseline_p50_ms=baseline,
                          stuck_handlers=raw["stuck_handlers"], capacity=raw["capacity"],
                          ack_lag_ms=raw["ack_lag_ms"], rss_bytes=raw["rss_bytes"], rss_limit_bytes=0)
    scored = dataclasses.replace(samples, metrics={**samples.metrics, "health_score": scores})
    return len(analysis.analyse(scored, rss_limit_bytes=512 * 1024 * 1024))


def _analysis_time(workers: int, samples: int) -> dict[str, Any]:
    fleet, raw = _fleet(workers, samples)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        _analyse_all(fleet, raw)
        times.append((time.perf_counter() - started) * 1000)
    report = analysis.analyse(dataclasses.replace(fleet, metrics={
        **fleet.metrics, "health_score": health_score(completed=raw["jobs_completed"], failed=raw["jobs_failed"],
                                                      latency_p50_ms=raw["latency_p50_ms"],
                                                      baseline_p50_ms=latency_baseline(raw["latency_p50_ms"],
                                                                                       axis=1)[:, None])}))
    return {"workers": workers, "samples_per_worker": samples, "best_ms": round(min(times), 2),
            "median_ms": round(statistics.median(times), 2),
            "predicted_failures": sum(w.failure is not None for w in report),
            "workers_with_anomalies": sum(bool(w.anomalies) for w in report)}


def _read_time(env: Env, workers: int, samples: int) -> dict[str, Any]:
    """Insert ``workers`` x ``samples`` samples (one INSERT ... SELECT), then time reading them back."""
    reset_schema(env)
    conn = env.conn
    conn.execute(
        f"INSERT INTO {SCHEMA}.workers (id, hostname, pid, queues, capacity)"
        " SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(w), 12, '0'))::uuid, 'bench', w,"
        " ARRAY['q' || (w %% 10)], 16 FROM generate_series(1, %s) AS w", (workers,))
    conn.execute(
        f"INSERT INTO {SCHEMA}.worker_health_logs (worker_id, metric_type, metric_value, logged_at,"
        " jobs_completed, jobs_failed, latency_p50_ms, latency_p95_ms, rss_bytes, health_score)"
        " SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(w), 12, '0'))::uuid, 'heartbeat', 1,"
        " now() - make_interval(secs => 30 * s), 300, 3, 12 + random(), 36, 60000000, 1"
        " FROM generate_series(1, %s) AS w, generate_series(0, %s - 1) AS s", (workers, samples))
    conn.execute(f"ANALYZE {SCHEMA}.worker_health_logs")
    queries = HealthQueries(SCHEMA)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        loaded = SampleSet.from_rows(queries.recent_samples(conn, 3600))
        times.append((time.perf_counter() - started) * 1000)
    return {"rows": int(loaded.counts.sum()), "best_ms": round(min(times), 1),
            "median_ms": round(statistics.median(times), 1)}


def run(env: Env, tmp: Path, *, jobs: int, workers: int, concurrency: int, batch_size: int, rounds: int,
        fleet_workers: int, fleet_samples: int) -> Run:
    cost = _sampling_cost(env, tmp, jobs, workers, concurrency, batch_size, rounds)
    metrics = {"sampling": cost, "hooks": _hooks_per_job(),
               "analysis": _analysis_time(fleet_workers, fleet_samples),
               "read": _read_time(env, fleet_workers, fleet_samples)}
    settings = {"jobs": jobs, "workers": workers, "concurrency": concurrency, "batch_size": batch_size,
                "rounds": rounds, "heartbeat_interval_seconds": 1.0}
    return Run(envelope(env, NAME, settings, metrics), {})


def cost_rows(s: dict[str, Any], what: str) -> list[tuple[str, str]]:
    """The report's rows of a ``paired_cost`` result."""
    return [
        (f"{what} on / off (jobs/s)", f"{s['median_ratio']:.3f} median of {s['ratios_on_over_off']}"
                                      f" -> cost {s['cost_percent']:+.2f} %"),
        ("worker CPU per job on / off", f"{s['cpu_cost_percent']:+.2f} % (median of {s['cpu_ratios_on_over_off']};"
                                        f" us/job on {s['cpu_us_per_job_on']}, off {s['cpu_us_per_job_off']})"),
        ("jobs/s on", ", ".join(f"{x:,.0f}" for x in s["jobs_per_s_on"])),
        ("jobs/s off", ", ".join(f"{x:,.0f}" for x in s["jobs_per_s_off"])),
    ]


def rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    s, a, r = record["sampling"], record["analysis"], record["read"]
    return [
        ("job-path recording, in-process", f"{record['hooks']['us_per_job']} us CPU per job"),
        *cost_rows(s, "sampling"),
        ("analysis", f"{a['workers']:,} workers x {a['samples_per_worker']} samples: best {a['best_ms']} ms, "
                     f"median {a['median_ms']} ms ({a['predicted_failures']} predicted failures, "
                     f"{a['workers_with_anomalies']} workers with anomalies)"),
        ("read samples from Postgres", f"{r['rows']:,} rows: best {r['best_ms']} ms, median {r['median_ms']} ms"),
        ("lost / duplicated", str(s["lost_or_duplicated"])),
    ]
