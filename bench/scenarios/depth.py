"""depth: burn-down throughput with a small and a large table.

Before each burn-down (the throughput scenario's, N jobs) the jobs table
already holds ``--small`` (then ``--large``) rows: a ``--backlog-fraction`` of
them queued in ten other queues (backlog that shares the claim index), the
rest completed jobs of the bench queue with their ``job_executions`` rows
(history, as a week of retention leaves it). The rows are written with
``INSERT ... SELECT generate_series`` straight into pgq's tables, then
``VACUUM ANALYZE`` and (where allowed) ``CHECKPOINT``, for both sizes alike
(the fill's insert rate into ``jobs`` is reported: it is the database's own
cost of a jobs row, constraints and indexes included).
Before each burn-down, one claim of ``--batch-size`` jobs and their completion
run under ``auto_explain`` in a transaction rolled back (``bench.plans``): the
record keeps both plans with ``ANALYZE`` and ``BUFFERS`` at each size.
Reported: both runs and ``large_vs_small`` = large rate / small rate.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import psycopg

from .. import options, plans
from ..common import Env, Run, envelope, rate, ratio, reset_schema
from ..measure import Workers, burn_down, preload
from ..names import BENCH_QUEUE, SCHEMA, TASK
from ..report import cost_text

NAME = "depth"
PARAMS = [
    options.jobs(20000), options.workers(1), options.concurrency(), options.batch_size(),
    options.number("--small", 10000, "Rows already in the table, small run."),
    options.number("--large", 1000000, "Rows already in the table, large run."),
    options.number("--backlog-fraction", 0.1, "Share of those rows queued in other queues.", click.FloatRange(0, 1)),
]
ALL: list[dict[str, Any]] = [{}]

_FILL_JOBS = f"""
INSERT INTO {SCHEMA}.jobs (queue, task, status, priority, run_at, attempts, max_attempts, worker_id,
                           started_at, finished_at, created_at, updated_at)
SELECT CASE WHEN backlog THEN 'bench-backlog-' || (g %% 10) ELSE %(queue)s END, %(task)s,
       (CASE WHEN backlog THEN 'queued' ELSE 'completed' END)::{SCHEMA}.job_status, 3,
       t, CASE WHEN backlog THEN 0 ELSE 1 END, 3,
       CASE WHEN backlog THEN NULL ELSE '00000000-0000-4000-8000-000000000000'::uuid END,
       CASE WHEN backlog THEN NULL ELSE t END, CASE WHEN backlog THEN NULL ELSE t + interval '5 ms' END, t, t
FROM generate_series(1, %(rows)s) AS g,
     LATERAL (SELECT g <= %(backlog)s AS backlog, now() - interval '7 days' + g * interval '1 ms' AS t) AS x
"""
_FILL_EXECUTIONS = f"""
INSERT INTO {SCHEMA}.job_executions (job_id, life, attempt, worker_id, started_at, finished_at, outcome)
SELECT id, 1, 1, worker_id, started_at, finished_at, 'completed' FROM {SCHEMA}.jobs WHERE status = 'completed'
"""


def run(env: Env, tmp: Path, *, jobs: int, workers: int, concurrency: int, batch_size: int, small: int,
        large: int, backlog_fraction: float) -> Run:
    crew = Workers(workers, concurrency, batch_size)
    runs: dict[str, Any] = {}
    timelines = {}
    for name, rows in (("small", small), ("large", large)):
        reset_schema(env)
        fill = _fill(env, rows, backlog_fraction)
        first, last = preload(env, jobs)
        explained = plans.claim_and_complete(env.url, BENCH_QUEUE, batch_size)
        metrics, series = burn_down(env, tmp, crew, first, last, label=f"burn-down over {rows:,} rows")
        timelines[f"depth {rows:,} rows"] = metrics.pop("timeline")
        runs[name] = {"rows_before": rows, "fill": fill, **metrics, "plans": explained}
    result = {
        "large_vs_small": ratio(runs["large"]["process_jobs_per_s"], runs["small"]["process_jobs_per_s"]),
        **runs,
    }
    settings = {"jobs": jobs, "small": small, "large": large, "backlog_fraction": backlog_fraction,
                **crew.describe()}
    return Run(envelope(env, NAME, settings, result), {"timelines": timelines})


def rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for name in ("small", "large"):
        r = record[name]
        out.append((f"{r['rows_before']:,} rows before",
                    f"{r['process_jobs_per_s']:>10,.0f} jobs/s{cost_text(r)}; lost+duplicated {r['lost_or_duplicated']}"
                    f" (filled in {r['fill']['seconds']} s, jobs at {r['fill']['jobs_rows_per_s'] or 0:,.0f} rows/s)"))
        out.append((f"  one claim, one completion of {r['plans'].get('batch', '-')}", _plans_text(r["plans"])))
    out.append(("large / small", f"{record['large_vs_small']:.0%}" if record["large_vs_small"] else "-"))
    return out


def _plans_text(explained: dict[str, Any]) -> str:
    if not explained.get("available"):
        return f"no plans: {explained.get('why')}"
    return "; ".join(f"{k} {explained[k]['ms']} ms, buffers hit {explained[k]['shared_hit']:,} read "
                     f"{explained[k]['shared_read']:,}" for k in ("claim", "complete"))


def _fill(env: Env, rows: int, backlog_fraction: float) -> dict[str, Any]:
    """Write ``rows`` jobs (backlog and history) and the history's executions; vacuum; checkpoint."""
    started = time.perf_counter()
    backlog = round(rows * backlog_fraction)
    env.say(f"depth: writing {rows:,} rows ({backlog:,} backlog, {rows - backlog:,} history)")
    if rows:
        env.conn.execute(_FILL_JOBS, {"rows": rows, "backlog": backlog, "queue": BENCH_QUEUE, "task": TASK})
    jobs_seconds = time.perf_counter() - started
    if rows:
        env.conn.execute(_FILL_EXECUTIONS)
    env.conn.execute(f"VACUUM ANALYZE {SCHEMA}.jobs")
    env.conn.execute(f"VACUUM ANALYZE {SCHEMA}.job_executions")
    try:
        env.conn.execute("CHECKPOINT")
        checkpoint = True
    except psycopg.errors.InsufficientPrivilege:
        checkpoint = False
    return {"backlog": backlog, "history": rows - backlog, "seconds": round(time.perf_counter() - started, 2),
            "jobs_rows_per_s": rate(rows, jobs_seconds), "checkpoint": checkpoint}
