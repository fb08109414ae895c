"""soak: producers and workers together for minutes, with failing and slow jobs, pruning on.

A producer process offers ``--rate`` jobs/s for ``--minutes``, open loop (as
the steady scenario). A fraction of the jobs is slow (``--slow-ms``) and a
fraction always fails (retried quickly, then dead after ``--max-attempts``).
W worker processes x C run them with maintenance on: stale sweep, timeouts,
and pruning of finished jobs older than ``--retention-seconds``, so that the
tables stay bounded while autovacuum cleans up behind. Every
``--sample-seconds`` the run records, over the last window:

- throughput (handler runs ended per second, failed attempts included) and
  p99 pickup latency (first handler start - the enqueue call's return);
- dead and live tuples and total size (with indexes and TOAST) of ``jobs``,
  its heap and its indexes apart, the size of ``job_executions`` and of all
  pgq tables; rows deleted from ``jobs`` so far (pruning, purging); queue
  depth; autovacuum runs so far.

``jobs_growth_after_retention`` compares the size of ``jobs`` at the last
sample before the drain with the first sample after two retention periods
(one to fill the window, one for pruning and autovacuum to catch up): about 1
when pruning keeps the table flat.

At the end the queue is drained and checked: every job enqueued is completed
(or pruned after completing), or dead when designed to fail; no job ran more
often than it had to (``lost``, ``duplicated``), and the dead letter queue
holds exactly the failing jobs.
"""

from __future__ import annotations

import os
import random
import time
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

import pgq
from pgq.db import quote_ident

from .. import options
from ..common import Env, Progress, Run, clock_offset, envelope, percentiles, reset_schema
from ..measure import by_id
from ..names import APP_PREFIX, SCHEMA
from ..procs import Children, read_records
from ..workload import Line, Recorder, warm

NAME = "soak"
TASK, QUEUE = "bench.soak", "soak"
OK, SLOW, FAIL = 0, 1, 2
PRUNED, COMPLETED, DEAD, OTHER = 0, 1, 2, 3  # a job's status at the end (pruned: not in the table)
PARAMS = [
    options.number("--minutes", 10.0, "How long the producer offers jobs.", click.FloatRange(0.01)),
    options.number("--rate", 500.0, "Jobs per second offered.", click.FloatRange(1)),
    options.workers(2), options.concurrency(), options.batch_size(), options.sleep_ms(1.0),
    options.number("--slow-ms", 200.0, "What a slow job does: sleep this many milliseconds.", click.FloatRange(0)),
    options.number("--slow-fraction", 0.01, "Fraction of slow jobs.", click.FloatRange(0, 1)),
    options.number("--fail-fraction", 0.01, "Fraction of jobs that always fail (dead after --max-attempts).",
                   click.FloatRange(0, 1)),
    options.number("--max-attempts", 3, "Attempts of a failing job.", click.IntRange(1, 100)),
    options.number("--retention-seconds", 60.0, "Completed jobs older than this are pruned.", click.FloatRange(0)),
    options.number("--sample-seconds", 10.0, "Length of a sampling window.", click.FloatRange(0.2)),
    options.number("--dead-retention-seconds", float("inf"),
                   "Dead jobs older than this are purged by maintenance (PGQ_DEAD_JOB_RETENTION_SECONDS); "
                   "inf keeps them.", click.FloatRange(0)),
]
ALL: list[dict[str, Any]] = []  # minutes long: run on its own, never in `all`


@dataclass(frozen=True)
class SoakSpec:
    settings: pgq.Settings
    rate: float
    jobs: int
    slow_fraction: float
    fail_fraction: float
    max_attempts: int
    concurrency: int
    batch_size: int
    sleep_ms: float
    slow_ms: float
    record_path: str
    seed: int = 0


# ---------------------------------------------------------------- child processes
_recorder: Recorder | None = None
_sleep = {OK: 0.0, SLOW: 0.0}


def job(k: int) -> None:
    """The soak job: kind ``k`` is ok (sleep ``--sleep-ms``), slow, or failing; timed and recorded."""
    started = time.time()
    if k == FAIL:
        ended = time.time()
        if _recorder is not None:
            _recorder.add(pgq.current_job().job.id, started, ended)
        raise RuntimeError("soak: a job designed to fail")
    if _sleep[k]:
        time.sleep(_sleep[k])  # the job's work
    ended = time.time()
    if _recorder is not None:
        _recorder.add(pgq.current_job().job.id, started, ended)


def make_queue(settings: pgq.Settings) -> pgq.Queue:
    q = pgq.Queue(settings, strict_tasks=False)
    q.task(name=TASK, queue=QUEUE, retry=pgq.Backoff(base=0.2, factor=2.0, max=2.0))(job)
    return q


def worker_main(spec: SoakSpec, line: Line) -> None:
    """A soak worker process: maintenance on (pruning), the job recorded in this process."""
    global _recorder
    os.environ["PGAPPNAME"] = f"{APP_PREFIX}-worker"
    _recorder = Recorder(line.counter)
    _sleep[OK], _sleep[SLOW] = spec.sleep_ms / 1000.0, spec.slow_ms / 1000.0
    q = make_queue(spec.settings)
    worker = q.worker(queues=[QUEUE], concurrency=spec.concurrency, batch_size=spec.batch_size)
    warm(q)
    line.ready.set()
    line.go.wait()
    worker.run()
    q.close()
    _recorder.dump(spec.record_path)


def producer_main(spec: SoakSpec, line: Line) -> None:
    """Open loop: job k is due at start + k/rate; whatever is due goes in one ``enqueue_many``.

    Records (job id, time before the call, time it returned) per job, and the kinds
    in a second file, ``record_path + '.kinds'``, as (job id, kind, 0).
    """
    os.environ["PGAPPNAME"] = f"{APP_PREFIX}-producer"
    recorder = Recorder(line.counter)
    kinds = array("d")
    rng = random.Random(spec.seed)
    q = make_queue(spec.settings)
    specs = {OK: q.job_spec(TASK, {"k": OK}), SLOW: q.job_spec(TASK, {"k": SLOW}),
             FAIL: q.job_spec(TASK, {"k": FAIL}, max_attempts=spec.max_attempts)}
    warm(q)
    line.ready.set()
    line.go.wait()
    start = time.time()
    sent = 0
    while sent < spec.jobs:
        due = min(spec.jobs, int((time.time() - start) * spec.rate) + 1) - sent
        if due <= 0:
            time.sleep(max(0.0, start + sent / spec.rate - time.time()))  # pacing the offered rate
            continue
        n = min(due, 500)
        chosen = [FAIL if (r := rng.random()) < spec.fail_fraction else SLOW if r < spec.fail_fraction
                  + spec.slow_fraction else OK for _ in range(n)]
        called = time.time()
        ids = q.enqueue_many([specs[k] for k in chosen])
        returned = time.time()
        for job_id, k in zip(ids, chosen, strict=True):
            recorder.add(job_id, called, returned)
            kinds.extend((job_id, k, 0.0))
        sent += n
    line.stamp.value = time.time()
    q.close()
    recorder.dump(spec.record_path)
    with open(spec.record_path + ".kinds", "wb") as f:
        kinds.tofile(f)


# ---------------------------------------------------------------- the run
def run(env: Env, tmp: Path, *, minutes: float, rate: float, workers: int, concurrency: int, batch_size: int,
        sleep_ms: float, slow_ms: float, slow_fraction: float, fail_fraction: float, max_attempts: int,
        retention_seconds: float, sample_seconds: float, dead_retention_seconds: float) -> Run:
    reset_schema(env)
    duration = minutes * 60.0
    total = max(1, int(rate * duration))
    # Maintenance (stale sweep, timeouts, pruning) runs in the workers, often enough for the retention.
    settings = env.settings(claim_batch_size=batch_size, job_retention_seconds=retention_seconds,
                            dead_job_retention_seconds=dead_retention_seconds,
                            maintenance_interval_seconds=min(5.0, max(0.5, retention_seconds / 4)))

    def spec(path: str) -> SoakSpec:
        return SoakSpec(settings, rate, total, slow_fraction, fail_fraction, max_attempts, concurrency, batch_size,
                        sleep_ms, slow_ms, path)

    worker_paths = [str(tmp / f"soak-worker-{i}-{time.monotonic_ns()}.bin") for i in range(workers)]
    producer_path = str(tmp / f"soak-producer-{time.monotonic_ns()}.bin")
    group = Children(worker_main, [(spec(p),) for p in worker_paths], "pgq-bench-worker")
    producer = Children(producer_main, [(spec(producer_path),)], "pgq-bench-producer")
    group.start()
    producer.start()
    group.release()
    offset, _ = clock_offset(env)
    sampler = Sampler(env)
    bar = Progress(env, total, f"soak {rate:,.0f} jobs/s offered for {minutes:g} min")
    started = producer.release()
    timeline: list[list[float]] = []
    try:
        drained_at = _follow(env, group, producer, total, started, duration, sample_seconds, sampler, timeline, bar)
    finally:
        bar.close()
        group.stop()
    group.join(timeout=120)
    producer.join()
    sampler.sample(time.time() - started, final=True)
    sent = read_records([producer_path])
    kinds = read_records([producer_path + ".kinds"])
    runs = read_records(worker_paths)
    metrics, series = _metrics(env, sent, kinds, runs, started, producer.stamps()[0], drained_at, duration,
                               sample_seconds, sampler, max_attempts, offset, retention_seconds)
    metrics["timeline"] = timeline
    series.update(timeline=timeline, label=f"soak {rate:,.0f}/s offered")
    run_settings = {"minutes": minutes, "rate": rate, "workers": workers, "concurrency": concurrency,
                    "batch_size": batch_size, "job_sleep_ms": sleep_ms, "slow_ms": slow_ms,
                    "slow_fraction": slow_fraction, "fail_fraction": fail_fraction, "max_attempts": max_attempts,
                    "retention_seconds": retention_seconds, "sample_seconds": sample_seconds,
                    "dead_retention_seconds": dead_retention_seconds,
                    "maintenance_interval_seconds": settings.maintenance_interval_seconds}
    return Run(envelope(env, NAME, run_settings, metrics), series)


def _follow(env: Env, group: Children, producer: Children, total: int, started: float, duration: float,
            sample_seconds: float, sampler: Sampler, timeline: list[list[float]], bar: Progress) -> float:
    """Sample until the producer is done and every job is finished; return when that was (wall clock)."""
    next_sample = sample_seconds
    next_drain_check = 0.0
    limit = duration * 3 + 120
    tick = time.monotonic()
    while True:
        elapsed = time.time() - started
        done, sent = group.done(), producer.done()
        timeline.append([round(elapsed, 3), done, sent])
        bar.to(sent)
        if elapsed >= next_sample:
            sampler.sample(elapsed)
            next_sample += sample_seconds
        if sent >= total and not producer.alive() and elapsed >= next_drain_check:
            next_drain_check = elapsed + 0.5
            if sampler.unfinished() == 0:
                return time.time()
        if not group.alive():
            raise pgq.PgqError("the soak's worker processes exited early")
        if elapsed > limit:
            group.abort()
            raise pgq.PgqError(f"the soak did not drain within {limit:.0f} s ({done} handler runs, {sent} sent)")
        tick += 0.1
        time.sleep(max(0.0, tick - time.monotonic()))  # the sampling period


class Sampler:
    """Postgres-side figures of the bench schema, once per window."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.samples: list[dict[str, Any]] = []
        s = quote_ident(SCHEMA)
        self._unfinished = f"SELECT count(*) FROM {s}.jobs WHERE status IN ('queued', 'running', 'retrying')"
        self._stats = (
            "SELECT n_dead_tup, n_live_tup, autovacuum_count, pg_total_relation_size(relid),"
            " pg_relation_size(relid), pg_indexes_size(relid), n_tup_del"
            " FROM pg_stat_user_tables WHERE schemaname = %s AND relname = 'jobs'")
        self._executions = ("SELECT pg_total_relation_size(relid) FROM pg_stat_user_tables"
                            " WHERE schemaname = %s AND relname = 'job_executions'")
        self._size = ("SELECT sum(pg_total_relation_size(relid)) FROM pg_stat_user_tables"
                      " WHERE schemaname = %s AND relname <> 'alembic_version'")
        # Every table and index of the schema on its own (heap or index file, no TOAST): which one grows.
        self._relations = ("SELECT c.relname, pg_relation_size(c.oid) FROM pg_class AS c"
                           " JOIN pg_namespace AS n ON n.oid = c.relnamespace"
                           " WHERE n.nspname = %s AND c.relkind IN ('r', 'i') ORDER BY c.relname")
        self._dead_letters = f"SELECT count(*) FROM {s}.dead_letter_queue WHERE requeued_at IS NULL"

    def unfinished(self) -> int:
        return int(self.env.conn.execute(self._unfinished).fetchone()[0])

    def sample(self, elapsed: float, *, final: bool = False) -> None:
        conn = self.env.conn
        dead, live, autovacuums, jobs_bytes, heap, indexes, deleted = conn.execute(self._stats, (SCHEMA,)).fetchone()
        (executions_bytes,) = conn.execute(self._executions, (SCHEMA,)).fetchone()
        (all_bytes,) = conn.execute(self._size, (SCHEMA,)).fetchone()
        self.samples.append({
            "t": round(elapsed, 1), "final": final, "depth": self.unfinished(),
            "jobs_dead_tuples": int(dead), "jobs_live_tuples": int(live), "jobs_autovacuums": int(autovacuums),
            "jobs_bytes": int(jobs_bytes), "jobs_heap_bytes": int(heap), "jobs_index_bytes": int(indexes),
            "jobs_deleted": int(deleted), "executions_bytes": int(executions_bytes or 0),
            "tables_bytes": int(all_bytes or 0),
            "dead_letters": int(conn.execute(self._dead_letters).fetchone()[0]),
            "relations": {str(name): int(size) for name, size in conn.execute(self._relations, (SCHEMA,)).fetchall()},
        })


def _metrics(env: Env, sent: np.ndarray, kinds: np.ndarray, runs: np.ndarray, started: float, produced_at: float,
             drained_at: float, duration: float, window: float, sampler: Sampler, max_attempts: int,
             offset: float, retention: float) -> tuple[dict[str, Any], dict[str, Any]]:
    # numpy throughout: an hour at 5,000 jobs/s is 18 million jobs (Python dicts of them would take gigabytes).
    ids = sent[:, 0]
    kind = by_id(kinds[:, 0], kinds[:, 1], ids)
    # First handler start of each job (a failing job runs max_attempts times).
    order = np.lexsort((runs[:, 1], runs[:, 0]))
    first = runs[order][np.r_[True, np.diff(runs[order][:, 0]) != 0]] if runs.size else runs
    integrity = _integrity(env, ids, kind, runs, max_attempts)
    # Per window: handlers ended, p99 pickup of the jobs that started in it, and the sampled tables.
    windows = []
    edges = np.arange(0.0, max(duration, drained_at - started) + window, window)
    ends = runs[:, 2] - started
    first_start = by_id(first[:, 0], first[:, 1], ids)
    starts = first_start - started
    picked = (first_start - sent[:, 2]) * 1000.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_window = picked[(starts >= lo) & (starts < hi)]  # NaN (never ran) compares false
        sample = next((s for s in sampler.samples if lo < s["t"] <= hi + 0.5 and not s["final"]), None)
        windows.append({
            "t": round(float(hi), 1),
            "runs_per_s": round(float(((ends >= lo) & (ends < hi)).sum()) / window, 1),
            "pickup_p99_ms": round(float(np.percentile(in_window, 99)), 2) if in_window.size else None,
            **({k: v for k, v in sample.items() if k not in ("t", "final", "relations")} if sample else {}),
        })
    pickup_ms = picked[~np.isnan(picked)]
    sizes = [s["tables_bytes"] for s in sampler.samples]
    steady = [s["tables_bytes"] for s in sampler.samples if s["t"] >= duration / 2 and not s["final"]]
    # After two retention periods (filled, then pruned and vacuumed once) until the producer stopped.
    settled_samples = [s for s in sampler.samples if 2 * retention <= s["t"] <= duration and not s["final"]]
    settled = [s["jobs_bytes"] for s in settled_samples]
    metrics = {
        "jobs": int(ids.size),
        "produced_jobs_per_s": round(ids.size / (produced_at - started), 1) if produced_at > started else None,
        # Handlers that ended within the offered window, per second (failed attempts count).
        "handler_runs_per_s": round(float((ends <= duration).sum()) / duration, 1),
        "drain_seconds": round(drained_at - produced_at, 2),
        "pickup_latency_ms": percentiles(pickup_ms),
        "windows": windows,
        "samples": sampler.samples,
        "tables_bytes_max": max(sizes) if sizes else None,
        "tables_bytes_final": sizes[-1] if sizes else None,
        # Second half of the run over the first sample of it: ~1 when pruning and autovacuum keep up.
        "tables_growth_second_half": round(steady[-1] / steady[0], 2) if len(steady) >= 2 and steady[0] else None,
        "jobs_growth_after_retention": (round(settled[-1] / settled[0], 2) if len(settled) >= 2 and settled[0]
                                        else None),
        "jobs_bytes_after_retention": [min(settled), max(settled)] if settled else None,
        # Each table and index: bytes at the first sample after two retention periods, and at the last before the drain.
        "relations_after_retention": ({name: [settled_samples[0]["relations"].get(name), size]
                                       for name, size in settled_samples[-1]["relations"].items()}
                                      if settled_samples else None),
        "jobs_dead_tuples_max": max((s["jobs_dead_tuples"] for s in sampler.samples), default=None),
        "clock_offset_ms": round(offset * 1000, 3),
        # Without autovacuum nothing reclaims the dead row versions: the tables cannot stay bounded.
        "autovacuum": {name: env.conn.execute(f"SHOW {name}").fetchone()[0]
                       for name in ("autovacuum", "autovacuum_naptime", "autovacuum_vacuum_cost_delay")},
        **integrity,
    }
    series = {"latency": {"soak pickup (from commit)": pickup_ms}}
    return metrics, series


def _integrity(env: Env, ids: np.ndarray, kind: np.ndarray, runs: np.ndarray,
               max_attempts: int) -> dict[str, Any]:
    """Every enqueued job accounted for, run as often as it had to, the DLQ exact.

    A job missing from the table was pruned, which happens only to completed jobs
    (a recorded handler run of it proves it ran), or to dead ones past
    ``--dead-retention-seconds`` (after all their attempts ran).
    """
    s = quote_ident(SCHEMA)
    rows = env.conn.execute(
        f"SELECT id, CASE status WHEN 'completed' THEN {COMPLETED} WHEN 'dead' THEN {DEAD} ELSE {OTHER} END"
        f" FROM {s}.jobs WHERE id BETWEEN %s AND %s", (int(ids.min()), int(ids.max()))).fetchall()
    table = np.asarray(rows, dtype=np.float64).reshape(-1, 2)
    status = np.nan_to_num(by_id(table[:, 0], table[:, 1], ids), nan=PRUNED)
    run_ids, run_counts = np.unique(runs[:, 0], return_counts=True)
    ran = np.nan_to_num(by_id(run_ids, run_counts.astype(np.float64), ids), nan=0.0)
    failing = kind == FAIL
    # A failing job is dead, or was purged as dead (--dead-retention-seconds) after all its attempts ran.
    lost = (failing & (status != DEAD) & ~((status == PRUNED) & (ran >= max_attempts))
            | ~failing & (((status == PRUNED) & (ran == 0)) | ((status != PRUNED) & (status != COMPLETED))))
    duplicated = np.where(failing, np.maximum(0, ran - max_attempts), np.maximum(0, ran - 1))
    dlq = np.asarray([r[0] for r in env.conn.execute(
        f"SELECT job_id FROM {s}.dead_letter_queue WHERE requeued_at IS NULL").fetchall()], dtype=np.float64)
    return {"completed_or_pruned": int((~failing & ((status == PRUNED) | (status == COMPLETED))).sum()),
            "dead": int(dlq.size), "handler_runs": int(runs.shape[0]), "lost": int(lost.sum()),
            "duplicated": int(duplicated.sum()),
            "dead_letters_exact": bool(np.array_equal(np.unique(dlq), np.unique(ids[failing & (status == DEAD)]))),
            "pruned": int((status == PRUNED).sum()), "dead_purged": int((failing & (status == PRUNED)).sum())}


def rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    out = [
        ("offered / produced / handler runs",
         f"{record['settings']['rate']:,.0f} / {record['produced_jobs_per_s'] or 0:,.0f} jobs/s / "
         f"{record['handler_runs_per_s']:,.0f} runs/s (drained {record['drain_seconds']} s after the last enqueue)"),
        ("pickup (enqueue commit -> start)", _latency(record["pickup_latency_ms"])),
        ("jobs / handler runs / pruned", f"{record['jobs']:,} / {record['handler_runs']:,} / {record['pruned']:,}"),
        ("lost / duplicated / DLQ exact", f"{record['lost']} / {record['duplicated']} / "
                                          f"{'yes' if record['dead_letters_exact'] else 'NO'} ({record['dead']} dead, "
                                          f"{record.get('dead_purged', 0)} purged)"),
        ("pgq tables max / final", f"{_mb(record['tables_bytes_max'])} / {_mb(record['tables_bytes_final'])}"
                                   f" (second half x{record['tables_growth_second_half']})"),
        ("jobs dead tuples, max", f"{record['jobs_dead_tuples_max']:,}"),
        ("jobs size after 2 retention periods", _settled(record)),
        *[(f"  {name}", f"{_mb(first)} -> {_mb(last)}")
          for name, (first, last) in (record.get("relations_after_retention") or {}).items()
          if (first or 0) + (last or 0) >= 1_000_000],
        ("autovacuum", ", ".join(f"{k}={v}" for k, v in record["autovacuum"].items())
         + ("   (off: dead tuples pile up; not a soak of pgq's steady state)"
            if record["autovacuum"]["autovacuum"] == "off" else "")),
    ]
    out.append(("per window, ending at (s)", "runs/s  pickup p99 ms  jobs dead tuples  jobs size  (heap  "
                                             "indexes)  executions  deleted  depth"))
    for w in record["windows"]:
        out.append((f"  {w['t']:>7.1f}", f"{w['runs_per_s']:>6,.0f} {_num(w['pickup_p99_ms']):>14} "
                                         f"{w.get('jobs_dead_tuples', '-'):>17} {_mb(w.get('jobs_bytes')):>10} "
                                         f"{_mb(w.get('jobs_heap_bytes')):>9} {_mb(w.get('jobs_index_bytes')):>9} "
                                         f"{_mb(w.get('executions_bytes')):>11} {w.get('jobs_deleted', '-'):>8} "
                                         f"{w.get('depth', '-'):>6}"))
    return out


def _settled(record: dict[str, Any]) -> str:
    sizes = record.get("jobs_bytes_after_retention")
    if not sizes:
        return "-"
    return f"{_mb(sizes[0])} – {_mb(sizes[1])} (last / first x{record['jobs_growth_after_retention']})"


def _latency(lat: dict[str, Any]) -> str:
    if not lat or lat.get("p50") is None:
        return "no samples"
    return f"p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms (n={lat['n']})"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:,.1f} MB"
