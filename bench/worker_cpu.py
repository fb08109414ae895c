"""CPU per job of one in-process worker burn-down: a measure that a busy machine distorts little.

``python -m bench.worker_cpu --jobs 20000 --rounds 3`` (or run this file with
another checkout's interpreter, to compare two commits: the script imports
only ``pgq`` and the standard library, so ``/other/.venv/bin/python
bench/worker_cpu.py`` measures the other checkout's pgq). Each round pre-loads
``--jobs`` no-op jobs (``enqueue_many``, not measured) into schema
``pgq_cpu``, then runs ``Worker.run(burst=True)`` in this process with
``--concurrency`` threads (``--set FIELD=JSON``: a ``Settings`` field, e.g.
``health_sampling=false``; ``--without-checks``: an ablation, the CHECK
constraints of ``jobs`` dropped after the migration, to measure what they
cost the claim and completion updates) and measures:

- ``worker_us_per_job``: this process's CPU time (user + system,
  ``getrusage(RUSAGE_SELF)``) during the run, per job;
- ``backend_us_per_job``: the CPU time of this process's Postgres backends
  (``/proc/<pid>/stat`` of every backend whose ``application_name`` is the
  script's; the server must be on this machine), per job;
- ``jobs_per_s``: wall clock, which load does distort.

One JSON object per round on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from typing import Any

import psycopg

import pgq
from pgq import migrate

APP = "pgq-cpu"
SCHEMA = "pgq_cpu"
TASK = "cpu.job"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _noop() -> None:
    pass


def _backend_cpu(conn: psycopg.Connection[Any]) -> float:
    """CPU seconds so far of the backends of this script (the meter's own excluded)."""
    pids = [r[0] for r in conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND pid <> pg_backend_pid()",
        (APP,)).fetchall()]
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLOCK_TICKS


def _drop_checks(conn: psycopg.Connection[Any]) -> int:
    """Drop every CHECK constraint of the bench schema's ``jobs`` (the ablation); how many."""
    names = [r[0] for r in conn.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'c'",
        (f"{SCHEMA}.jobs",)).fetchall()]
    for name in names:
        conn.execute(f'ALTER TABLE {SCHEMA}.jobs DROP CONSTRAINT "{name}"')
    return len(names)


def one_round(url: str, jobs: int, concurrency: int, batch: int, without_checks: bool = False,
              **overrides: Any) -> dict[str, Any]:
    settings = pgq.Settings(database_url=url, schema=SCHEMA, claim_batch_size=batch, listen=False, **overrides)
    q = pgq.Queue(settings, strict_tasks=False)
    q.task(name=TASK, queue="cpu")(_noop)
    with psycopg.connect(url, autocommit=True) as meter:
        meter.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        migrate.upgrade(settings)
        dropped = _drop_checks(meter) if without_checks else 0
        q.enqueue_many([{"task": TASK}] * jobs)
        meter.execute(f"VACUUM ANALYZE {SCHEMA}.jobs")
        worker = pgq.Worker(q, concurrency=concurrency, install_signal_handlers=False, run_maintenance=False)
        with q.pool.connection():
            pass
        db_before = _backend_cpu(meter)
        before = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.perf_counter()
        worker.run(burst=True)
        wall = time.perf_counter() - wall
        after = resource.getrusage(resource.RUSAGE_SELF)
        db_after = _backend_cpu(meter)
        done = meter.execute(f"SELECT count(*) FROM {SCHEMA}.jobs WHERE status = 'completed'").fetchone()
        q.close()
        meter.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"jobs": jobs, "completed": done[0] if done else None, "concurrency": concurrency, "batch": batch,
            "settings": overrides, "checks_dropped": dropped,
            "jobs_per_s": round(jobs / wall), "worker_us_per_job": round(cpu / jobs * 1e6, 2),
            "worker_sys_us_per_job": round((after.ru_stime - before.ru_stime) / jobs * 1e6, 2),
            "context_switches_per_job": round((after.ru_nvcsw - before.ru_nvcsw + after.ru_nivcsw - before.ru_nivcsw)
                                              / jobs, 2),
            "backend_us_per_job": round((db_after - db_before) / jobs * 1e6, 2),
            "claim_round_trips": worker.counters.claim_round_trips,
            "ack_round_trips": worker.counters.ack_round_trips, "load": os.getloadavg()[0], "pgq": os.path.dirname(pgq.__file__)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("PGQ_DATABASE_URL", "postgresql://postgres@127.0.0.1/postgres"))
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                        help="a Settings field for the worker, e.g. health_sampling=false (repeatable)")
    parser.add_argument("--without-checks", action="store_true",
                        help="ablation: drop the CHECK constraints of jobs after the migration")
    args = parser.parse_args()
    sep = "&" if "?" in args.url else "?"
    url = f"{args.url}{sep}application_name={APP}"
    overrides = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    for _ in range(args.rounds):
        print(json.dumps(one_round(url, args.jobs, args.concurrency, args.batch, args.without_checks, **overrides)), flush=True)


if __name__ == "__main__":
    main()
