"""snapshots: state snapshots (issue 12) — creation time, size per job, restore rate.

Fills the bench schema with ``--jobs`` jobs still to run (queued, a payload of
three keys like an e-mail job's, priorities 1–5, one in ten with a unique key,
2 % running on 4 registered workers), ``VACUUM ANALYZE``, then:

- FULL creation, ``--repeat`` times (each a real snapshot, stored): p50 / p99 / max;
- an INCREMENTAL after 1 % of the jobs changed priority and 1 % completed;
- the size of the FULL (compressed, stored; uncompressed) per job;
- restore of the FULL into the emptied tables (``jobs``, ``workers``,
  ``job_dependencies``, ``job_executions`` truncated; the snapshot kept):
  jobs restored per second, and the dry run's time on the full tables;
- what a worker sees meanwhile: a probe writes one job that is not in the
  snapshot (as a claim or an acknowledgement does), over and over, for the
  whole restore (its latency p50 / p99 / max: how long a worker waits).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from pgq import snapshots

from .. import options
from pgq.db import connect

from ..common import Env, Run, envelope, percentiles, rate, reset_schema
from ..names import SCHEMA

NAME = "snapshots"
PARAMS = [
    options.jobs(10000, "Jobs still to run when the snapshots are taken."),
    options.number("--repeat", 20, "FULL snapshots taken to time creation."),
]
ALL: list[dict[str, Any]] = []  # run by name: `pgq bench snapshots -n 10000`, `-n 100000 --repeat 5`

_FILL = f"""
INSERT INTO {SCHEMA}.jobs (task, queue, priority, payload, unique_key)
SELECT 'send_email', 'emails', 1 + n %% 5,
       jsonb_build_object('to', 'user-' || n || '@example.com', 'template', 'welcome', 'account', n * 7),
       CASE WHEN n %% 10 = 0 THEN 'welcome:' || n END
FROM generate_series(1, %s) AS n
"""
_WORKERS = f"""
INSERT INTO {SCHEMA}.workers (id, hostname, pid, queues, capacity)
SELECT gen_random_uuid(), 'bench-' || n, 1000 + n, ARRAY['emails'], 16 FROM generate_series(1, 4) AS n
"""
_RUNNING = f"""
UPDATE {SCHEMA}.jobs SET status = 'running', attempts = 1, started_at = now(),
       worker_id = (SELECT id FROM {SCHEMA}.workers ORDER BY id LIMIT 1)
WHERE id % 50 = 0
"""
_CHANGE = f"UPDATE {SCHEMA}.jobs SET priority = 1 + (priority % 5) WHERE id % 100 = 1"
_COMPLETE = f"UPDATE {SCHEMA}.jobs SET status = 'completed', finished_at = now() WHERE id % 100 = 2"
_PROBE_JOB = f"INSERT INTO {SCHEMA}.jobs (task, queue) VALUES ('probe', 'probe') RETURNING id"
# A write to one row, as a claim or an acknowledgement is (the lock it needs is theirs).
_PROBE_WRITE = f"UPDATE {SCHEMA}.jobs SET priority = 1 + priority %% 5, updated_at = now() WHERE id = %s"
_EMPTY = f"TRUNCATE {SCHEMA}.jobs, {SCHEMA}.workers, {SCHEMA}.job_dependencies, {SCHEMA}.job_executions CASCADE"


def run(env: Env, tmp: Path, *, jobs: int, repeat: int) -> Run:
    reset_schema(env)
    settings = env.settings()
    conn = env.conn
    started = time.perf_counter()
    conn.execute(_FILL, [jobs])
    conn.execute(_WORKERS)
    conn.execute(_RUNNING)
    conn.execute(f"VACUUM ANALYZE {SCHEMA}.jobs")
    fill_seconds = time.perf_counter() - started
    env.say(f"snapshots: {jobs:,} jobs in {fill_seconds:.1f} s; {repeat} FULL snapshots")
    times = []
    full = None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        full = snapshots.create(settings)
        times.append(time.perf_counter() - t0)
    assert full is not None
    conn.execute(_CHANGE)
    conn.execute(_COMPLETE)
    t0 = time.perf_counter()
    inc = snapshots.create(settings, kind="INCREMENTAL")
    inc_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    snapshots.restore(settings, full.id, dry_run=True)
    dry_seconds = time.perf_counter() - t0
    conn.execute(_EMPTY)
    row = conn.execute(_PROBE_JOB).fetchone()
    assert row is not None
    done = threading.Event()
    probe_ms: list[float] = []
    prober = threading.Thread(target=_probe, args=(env.url, int(row[0]), done, probe_ms), daemon=True)
    prober.start()
    t0 = time.perf_counter()
    try:
        report = snapshots.restore(settings, full.id)
    finally:
        restore_seconds = time.perf_counter() - t0
        done.set()
        prober.join(timeout=60)
    restored = len(report.inserted)
    metrics = {
        "full_create_ms": percentiles([t * 1000 for t in times]),
        "incremental_create_ms": round(inc_seconds * 1000, 1),
        "incremental_bytes": inc.size_bytes,
        "full_bytes": full.size_bytes,
        "full_bytes_uncompressed": full.metadata["body_bytes"],
        "bytes_per_job": round(full.size_bytes / jobs, 1),
        "bytes_per_job_uncompressed": round(full.metadata["body_bytes"] / jobs, 1),
        "restore_seconds": round(restore_seconds, 3),
        "restore_jobs_per_s": rate(restored, restore_seconds),
        "restored_jobs": restored,
        "restore_dry_run_seconds": round(dry_seconds, 3),
        "claim_during_restore_ms": percentiles(probe_ms),
        "fill_seconds": round(fill_seconds, 2),
    }
    return Run(envelope(env, NAME, {"jobs": jobs, "repeat": repeat}, metrics))


def _probe(url: str, job_id: int, done: threading.Event, out: list[float]) -> None:
    """Write one job (not in the snapshot) until ``done``: what a worker waits during a restore."""
    with connect(url) as probe:
        while not done.is_set():
            t0 = time.perf_counter()
            probe.execute(_PROBE_WRITE, [job_id])
            out.append((time.perf_counter() - t0) * 1000)
            done.wait(0.01)


def rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    full = record["full_create_ms"]
    jobs = record["settings"]["jobs"]
    return [
        (f"FULL of {jobs:,} jobs", f"p50 {full['p50']} ms, p99 {full['p99']} ms, max {full['max']} ms"),
        ("INCREMENTAL (1 % changed, 1 % done)", f"{record['incremental_create_ms']} ms, {record['incremental_bytes']:,} bytes"),
        ("size per job", f"{record['bytes_per_job']} bytes stored ({record['bytes_per_job_uncompressed']} uncompressed)"),
        ("restore (COPY)", f"{record['restore_jobs_per_s'] or 0:,.0f} jobs/s ({record['restore_seconds']} s); "
                           f"dry run {record['restore_dry_run_seconds']} s"),
        ("a worker's write during the restore", _ms(record.get("claim_during_restore_ms"))),
    ]


def _ms(p: dict[str, Any] | None) -> str:
    if not p or not p.get("n"):
        return "no sample"
    return f"p50 {p['p50']} ms, p99 {p['p99']} ms, max {p['max']} ms (n = {p['n']})"
