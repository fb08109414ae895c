"""redis: Postgres-only against the Redis accelerator, at 1, 16, 64 and 128 concurrent jobs.

For each mode (``postgres``, then ``redis``) and each level L: min(W, L) worker
processes x ceil(L / processes) concurrency burn down N pre-loaded jobs whose
body sleeps ``--sleep-ms`` (for ``--duration`` s at most), then the same
workers sit idle for ``--idle`` s, then pick up ``--latency-jobs`` jobs
enqueued one at a time. Reported per mode and level: jobs/s; Postgres commits
per job during the burn-down (every statement pgq sends is one autocommit
transaction, so this counts its queries: claims, acknowledgements, polls);
Postgres CPU seconds per 1,000 jobs (utime + stime of every ``postgres``
process on this machine, so a remote server reports none and other load on
the machine adds to it); Postgres commits per second while every worker is
idle; pickup latency p50/p99 (handler start - just before the enqueue call).
In Redis mode the bench process also runs the mirror reconciler, as a
deployment's leader would (the bench workers run no maintenance), and the
keys live under the prefix ``pgq-bench-<hash of the database URL>``. The Redis URL is ``--redis-url``,
else ``PGQ_REDIS_URL``, else redis://127.0.0.1:6379/0.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import click

import pgq

from .. import options
from ..common import Env, Progress, Run, empty_tables, envelope, queue_tables, rate, reset_schema
from ..cost import CostMeter
from ..measure import Workers, integrity, pickup_probe, preload
from ..names import SCHEMA
from ..procs import follow, read_records
from .scale import _parse_levels

NAME = "redis"
PARAMS = [
    options.number("--levels", "1,16,64,128", "Concurrent jobs in total, comma-separated.", str),
    options.workers(4), options.duration(5.0), options.sleep_ms(1.0),
    options.jobs(20000, "Jobs pre-loaded for each level."), options.batch_size(),
    options.number("--idle", 2.0, "Seconds every worker sits idle (Postgres cost of idle workers).",
                   click.FloatRange(0)),
    options.number("--latency-jobs", 50, "Jobs enqueued one at a time per level (pickup latency)."),
    options.number("--redis-url", None, "Redis to accelerate with [default: PGQ_REDIS_URL or the local server].",
                   str),
]
ALL: list[dict[str, Any]] = []  # needs a Redis: run it by name (`pgq bench redis`)
PREFIX = "pgq-bench"  # + a hash of the database URL: two benches sharing a Redis do not collide


@dataclasses.dataclass
class _Accelerated(Env):
    """The bench environment with the Redis accelerator switched on."""

    redis_url: str = ""

    def settings(self, **overrides: Any) -> pgq.Settings:
        tag = hashlib.sha1(self.url.encode()).hexdigest()[:8]
        return super().settings(redis_url=self.redis_url, redis_prefix=f"{PREFIX}-{tag}", **overrides)

    def close(self) -> None:  # the real Env owns the connections
        pass


def run(env: Env, tmp: Path, *, levels: str, workers: int, duration: float, sleep_ms: float, jobs: int,
        batch_size: int, idle: float, latency_jobs: int, redis_url: str | None) -> Run:
    url = redis_url or os.environ.get("PGQ_REDIS_URL") or "redis://127.0.0.1:6379/0"
    accelerated = _Accelerated(**{f.name: getattr(env, f.name) for f in dataclasses.fields(Env)}, redis_url=url)
    totals = _parse_levels(levels)
    reset_schema(env)
    results: list[dict[str, Any]] = []
    timelines: dict[str, Any] = {}
    latencies: dict[str, Any] = {}
    for mode, menv in (("postgres", env), ("redis", accelerated)):
        for total in totals:
            processes = min(workers, total)
            crew = Workers(processes, math.ceil(total / processes), batch_size, sleep_ms)
            with _Leader(menv) if mode == "redis" else _nothing():
                level, series = _level(menv, tmp, crew, jobs, duration, idle, latency_jobs, mode)
            results.append(level)
            timelines[f"{mode} {processes}x{crew.concurrency}"] = level.pop("timeline")
            latencies[f"{mode} {processes}x{crew.concurrency}"] = series
    settings = {"levels": totals, "max_workers": workers, "duration": duration, "job_sleep_ms": sleep_ms,
                "jobs_per_level": jobs, "batch_size": batch_size, "idle_seconds": idle,
                "latency_jobs": latency_jobs, "redis_url": pgq.settings.redact_url(url)}
    return Run(envelope(env, NAME, settings, {"levels": results}), {"timelines": timelines, "latency": latencies})


def rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for lv in record["levels"]:
        lat = lv["pickup_latency_ms"]
        cpu = lv["postgres_cpu_s_per_1000_jobs"]
        out.append((f"{lv['mode']:>8} {lv['processes']} x {lv['concurrency']} = {lv['concurrent_jobs']}",
                    f"{lv['jobs_per_s']:>8,.0f} jobs/s{' (drained)' if lv['drained'] else ''}, "
                    f"{lv['postgres_commits_per_job']:.3f} queries/job, "
                    f"{'-' if cpu is None else f'{cpu:.2f}'} pg CPU s/1k jobs, "
                    f"idle {lv['idle_postgres_commits_per_s']:.1f} queries/s, "
                    f"pickup p50 {lat['p50']} ms p99 {lat['p99']} ms"))
    return out


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _Leader:
    """The mirror reconciler leader, run in the bench process (Redis mode)."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="bench-reconciler", daemon=True)

    def __enter__(self) -> _Leader:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def _loop(self) -> None:
        from pgq.maintenance import Maintenance

        settings = self.env.settings()
        with pgq.connect(settings=settings, strict_tasks=False) as q:
            maintenance = Maintenance(settings, q.pool, q.queries, redis=q.redis)
            assert maintenance.reconciler is not None
            while not self.stop.is_set():
                try:
                    maintenance.reconciler.run_once()
                except pgq.PgqError as exc:
                    self.env.say(f"reconciler: {exc}")
                self.stop.wait(settings.redis_reconcile_interval_seconds)


def _clear(redis: Any) -> None:
    """Delete the bench's keys (a previous level's ids refer to deleted jobs)."""
    client = redis._client
    keys = list(client.scan_iter(match=redis.keys.pattern, count=1000))
    for start in range(0, len(keys), 500):
        client.unlink(*keys[start:start + 500])


def _level(env: Env, tmp: Path, crew: Workers, jobs: int, duration: float, idle: float, latency_jobs: int,
           mode: str) -> tuple[dict[str, Any], Any]:
    empty_tables(env)
    if mode == "redis":
        _rebuilt(env)
    preload(env, jobs)
    # Burn-down: jobs/s, Postgres commits per job, Postgres CPU.
    meter = CostMeter(env, SCHEMA, queue_tables(env))
    group = crew.group(env, tmp, burst=False)
    group.start()
    meter.start()
    cpu_before = _postgres_cpu()
    bar = Progress(env, jobs, f"{mode} {crew.processes} x {crew.concurrency}")
    started = group.release()
    try:
        timeline = follow([group], started, until=lambda c, elapsed: elapsed >= duration or c[0] >= jobs,
                          timeout=duration + 120, progress=bar)
    finally:
        bar.close()
        cpu_after = _postgres_cpu()
        group.stop()
    group.join()
    done = int(timeline[-1][1])
    cost = meter.stop(max(1, done))
    runs = read_records(group.paths)
    elapsed = timeline[-1][0]
    drained = done >= jobs
    if drained and runs.size:
        elapsed = float(runs[:, 2].max() - started)
    check = integrity(jobs, jobs, runs)
    # Idle: every worker waits for work on an empty queue; what does that cost Postgres?
    empty_tables(env)
    if mode == "redis":
        _rebuilt(env)
    idle_commits = 0
    if idle > 0:
        idle_group = crew.group(env, tmp, burst=False)
        idle_group.start()
        idle_meter = CostMeter(env, SCHEMA, queue_tables(env))
        idle_meter.start()
        idle_group.release()
        time.sleep(idle)  # the idle period being measured
        idle_group.stop()
        idle_group.join()
        idle_commits = idle_meter.stop(1)["totals"]["commits"]
    # Pickup by idle workers, one job at a time.
    latency, series = pickup_probe(env, tmp, crew, jobs=latency_jobs, gap_ms=5.0,
                                   label=f"{mode} pickup {crew.processes} x {crew.concurrency}")
    cpu = None if cpu_before is None or cpu_after is None else round((cpu_after - cpu_before) * 1000 / max(1, done), 3)
    return {
        "mode": mode, "processes": crew.processes, "concurrency": crew.concurrency,
        "concurrent_jobs": crew.processes * crew.concurrency,
        "jobs_per_s": rate(done, elapsed), "jobs_done": done, "seconds": round(elapsed, 3), "drained": drained,
        "duplicated": check["duplicated"],
        "postgres_commits_per_job": round(cost["totals"]["commits"] / max(1, done), 4),
        "postgres_cpu_s_per_1000_jobs": cpu,
        # Includes each idle worker's start (register, warm-up) and stop (deregister).
        "idle_postgres_commits_per_s": round(idle_commits / idle, 1) if idle else 0.0,
        "pickup_latency_ms": latency["pickup_latency_ms"],
        "timeline": timeline,
    }, series


def _rebuilt(env: Env) -> None:
    """Drop the bench's keys (ids of deleted jobs) and rebuild the mirror for the
    emptied tables now, as the reconciler leader would on its next pass."""
    from pgq.redis.client import RedisClient
    from pgq.redis.reconciler import Reconciler

    settings = env.settings()
    redis = RedisClient(settings)
    try:
        _clear(redis)
        report = Reconciler(settings, None, redis).run_once(env.conn)  # type: ignore[arg-type]
        if not report.rebuilt:
            raise pgq.PgqError("the bench could not rebuild the Redis mirror")
    finally:
        redis.close()


def _postgres_cpu() -> float | None:
    """CPU seconds (user + system) used so far by every postgres process on this machine."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    found = False
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.find("(") + 1:stat.rfind(")")]
        if name not in ("postgres", "postmaster"):
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
        found = True
    return total / tick if found else None
