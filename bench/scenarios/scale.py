"""scale: jobs/s, Postgres connections and memory at 1, 16, 64, 128 concurrent jobs.

For each level L (concurrent jobs in total): min(W, L) worker processes x
ceil(L / processes) concurrency work through N pre-loaded jobs whose body
sleeps ``--sleep-ms`` (so that concurrency has waiting to overlap) for
``--duration`` s or until the table is drained. The worker processes are
fresh interpreters (spawned, not forked: a forked child's RSS would count the
bench parent's pages) that import ``pgq.cli`` as ``pgq worker`` does. Every
100 ms the bench counts the workers' connections to the bench database
(``pg_stat_activity``, by application_name) and reads each worker process's
``VmRSS`` (``/proc/<pid>/status``) and private memory (USS: ``Private_Clean +
Private_Dirty`` of ``/proc/<pid>/smaps_rollup``). Reported per level: jobs/s,
peak connections, peak RSS and USS per worker process.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from .. import options
from ..common import Env, Progress, Run, empty_tables, envelope, rate, reset_schema
from ..measure import Workers, integrity, preload
from ..names import APP_PREFIX
from ..procs import WorkerGroup, follow, read_records

NAME = "scale"
PARAMS = [
    options.number("--levels", "1,16,64,128", "Concurrent jobs in total, comma-separated.", str),
    options.workers(2), options.duration(5.0), options.sleep_ms(1.0),
    options.jobs(50000, "Jobs pre-loaded for each level."), options.batch_size(),
]
ALL: list[dict[str, Any]] = [{"duration": 3.0}]


def run(env: Env, tmp: Path, *, levels: str, workers: int, duration: float, sleep_ms: float, jobs: int,
        batch_size: int) -> Run:
    totals = _parse_levels(levels)
    reset_schema(env)
    results, timelines = [], {}
    for total in totals:
        processes = min(workers, total)
        crew = Workers(processes, math.ceil(total / processes), batch_size, sleep_ms)
        level = _level(env, tmp, crew, jobs, duration)
        results.append(level)
        timelines[f"scale {processes}x{crew.concurrency}"] = level.pop("timeline")
    settings = {"levels": totals, "max_workers": workers, "duration": duration, "job_sleep_ms": sleep_ms,
                "jobs_per_level": jobs, "batch_size": batch_size}
    metrics = {"levels": results}
    return Run(envelope(env, NAME, settings, metrics), {"timelines": timelines})


def rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f"{lv['processes']} x {lv['concurrency']} = {lv['concurrent_jobs']}",
             f"{lv['jobs_per_s']:>9,.0f} jobs/s{' (drained)' if lv['drained'] else ''}, "
             f"{lv['postgres_connections_peak']} connections, RSS {lv['rss_mb_peak_max']} MB "
             f"(private {lv['private_mb_peak_max']} MB) per process") for lv in record["levels"]]


def _parse_levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated whole numbers, got {text!r}",
                                 param_hint="--levels") from None
    if not levels or min(levels) < 1:
        raise click.BadParameter(f"levels must be >= 1, got {text!r}", param_hint="--levels")
    return levels


def _level(env: Env, tmp: Path, crew: Workers, jobs: int, duration: float) -> dict[str, Any]:
    empty_tables(env)
    preload(env, jobs)
    group = crew.group(env, tmp, burst=False, fresh=True)
    group.start()
    probe = _Probe(env, group)
    bar = Progress(env, jobs, f"scale {crew.processes} x {crew.concurrency}")
    started = group.release()
    try:
        timeline = follow([group], started, until=lambda c, elapsed: elapsed >= duration or c[0] >= jobs,
                          timeout=duration + 120, progress=bar, every=probe.sample)
    finally:
        bar.close()
        group.stop()
    group.join()
    runs = read_records(group.paths)
    elapsed, done = timeline[-1][0], timeline[-1][1]
    drained = done >= jobs
    if drained and runs.size:
        elapsed = float(runs[:, 2].max() - started)
    check = integrity(jobs, jobs, runs)
    return {
        "processes": crew.processes, "concurrency": crew.concurrency,
        "concurrent_jobs": crew.processes * crew.concurrency,
        "jobs_per_s": rate(done, elapsed), "jobs_done": int(done), "seconds": round(elapsed, 3), "drained": drained,
        "duplicated": check["duplicated"],
        **probe.summary(),
        "timeline": timeline,
    }


class _Probe:
    """Peak worker connections and per-process memory, sampled by ``follow``."""

    def __init__(self, env: Env, group: WorkerGroup) -> None:
        self.env = env
        self.connections = 0
        self.peaks = {pid: {"rss": 0, "private": 0} for pid in group.pids}

    def sample(self, _elapsed: float) -> None:
        (n,) = self.env.conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
            (f"{APP_PREFIX}-worker",)).fetchone()
        self.connections = max(self.connections, n)
        for pid, peak in self.peaks.items():
            for key, kib in _memory(pid).items():
                peak[key] = max(peak[key], kib)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"postgres_connections_peak": self.connections,
                               "connections_per_process": round(self.connections / max(1, len(self.peaks)), 1)}
        for key in ("rss", "private"):
            kib = [peak[key] for peak in self.peaks.values()] or [0]
            out[f"{key}_mb_peak_max"] = round(max(kib) / 1024, 1)
            out[f"{key}_mb_peak_mean"] = round(sum(kib) / len(kib) / 1024, 1)
        return out


def _memory(pid: int) -> dict[str, int]:
    """VmRSS and private memory (USS) of a process in KiB; zeros once it is gone."""
    found = {"rss": 0, "private": 0}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            found["rss"] = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            found["private"] = sum(int(line.split()[1]) for line in f if line.startswith("Private_"))
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    return found
