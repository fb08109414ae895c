"""baseline: what this database allows without pgq — the ceilings.

On a minimal table in the bench schema (``baseline_jobs``: identity id,
jsonb payload, smallint status, a partial index on runnable ids), with plain
psycopg:

- COPY of N rows in one statement (one commit);
- a single-row ``INSERT ... RETURNING id`` loop, one commit per row;
- the batched SKIP LOCKED loop: claim up to ``batch`` rows in one UPDATE ...
  RETURNING, ack them in one UPDATE, until the table is drained — on one
  connection, then on two (one process each);
- INSERT + NOTIFY in one transaction, one at a time, to a LISTENing process
  that claims on each notification: pickup latency from before the INSERT to
  the claim returning.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from .. import options
from ..common import Env, Progress, Run, envelope, percentiles, rate, reset_schema
from ..cost import CostMeter
from ..measure import by_id, one_at_a_time
from ..names import APP_PREFIX, SCHEMA
from ..procs import Children, follow, read_records
from ..report import cost_text, latency_text
from ..workload import Line, Recorder

NAME = "baseline"
PARAMS = [
    options.jobs(20000, "Rows for COPY, and rows each claim loop drains."),
    options.number("--inserts", 2000, "Rows of the single-row insert-and-commit loop."),
    options.number("--latency-jobs", 200, "Rows inserted one at a time to a LISTENing process (0 = skip)."),
    options.number("--gap-ms", 10.0, "Pause after each of those was claimed.", float),
    options.batch_size(),
]
ALL: list[dict[str, Any]] = [{}]

TABLE = f"{SCHEMA}.baseline_jobs"
CHANNEL = "pgq_bench_baseline"
CLAIM = (f"UPDATE {TABLE} SET status = 1 WHERE id IN (SELECT id FROM {TABLE} WHERE status = 0"
         " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id, payload")
ACK = f"UPDATE {TABLE} SET status = 2 WHERE id = ANY(%s)"
INSERT = f"INSERT INTO {TABLE} (payload) VALUES ('{{}}') RETURNING id"


def run(env: Env, tmp: Path, *, jobs: int, inserts: int, latency_jobs: int, gap_ms: float,
        batch_size: int) -> Run:
    reset_schema(env)
    _create_table(env)
    meter = CostMeter(env, SCHEMA, ["baseline_jobs"])
    copy = _copy(env, meter, jobs)
    loops = {n: _claim_loop(env, meter, tmp, jobs, batch_size, connections=n) for n in (1, 2)}
    insert = _insert_loop(env, meter, inserts) if inserts else None
    notify, latencies = _notify_probe(env, tmp, latency_jobs, gap_ms) if latency_jobs else (None, np.empty(0))
    metrics = {
        "copy_rows_per_s": copy["rows_per_s"],
        "insert_commit_rows_per_s": insert and insert["rows_per_s"],
        "claim_loop_1conn_jobs_per_s": loops[1]["jobs_per_s"],
        "claim_loop_2conn_jobs_per_s": loops[2]["jobs_per_s"],
        "notify_pickup_ms": notify,
        "phases": {"copy": copy, "insert_commit": insert, "claim_loop_1conn": loops[1], "claim_loop_2conn": loops[2]},
    }
    settings = {"jobs": jobs, "inserts": inserts, "latency_jobs": latency_jobs, "gap_ms": gap_ms,
                "batch_size": batch_size, "table": TABLE}
    return Run(envelope(env, NAME, settings, metrics), {"latency": {"raw INSERT+NOTIFY pickup": latencies}})


def rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    phases = record["phases"]
    out = [
        ("raw COPY", _rate_cost(phases["copy"], "rows")),
        ("raw INSERT+COMMIT loop", _rate_cost(phases["insert_commit"], "rows")),
        ("raw SKIP LOCKED loop, 1 connection", _rate_cost(phases["claim_loop_1conn"], "jobs")),
        ("raw SKIP LOCKED loop, 2 connections", _rate_cost(phases["claim_loop_2conn"], "jobs")),
    ]
    lat = record["notify_pickup_ms"]
    if lat:
        out.append(("raw INSERT+NOTIFY -> claim", latency_text(lat)))
    return out


def _rate_cost(phase: dict[str, Any] | None, unit: str) -> str:
    if phase is None:
        return "skipped"
    return f"{phase.get('rows_per_s', phase.get('jobs_per_s')):>10,.0f} {unit}/s" + cost_text(phase)


# ---------------------------------------------------------------- phases
def _create_table(env: Env) -> None:
    env.conn.execute(
        f"CREATE TABLE {TABLE} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " payload jsonb NOT NULL DEFAULT '{}', status smallint NOT NULL DEFAULT 0)")
    env.conn.execute(f"CREATE INDEX baseline_jobs_runnable ON {TABLE} (id) WHERE status = 0")


def _raw_connection(env: Env) -> psycopg.Connection[Any]:
    return psycopg.connect(env.url, autocommit=True, application_name=f"{APP_PREFIX}-raw")


def _copy(env: Env, meter: CostMeter, rows: int) -> dict[str, Any]:
    """COPY ``rows`` rows (payload '{}') in one statement, written in blocks of 5,000."""
    block = "{}\n" * 5000
    with _raw_connection(env) as conn:
        meter.start()
        started = time.perf_counter()
        with conn.cursor().copy(f"COPY {TABLE} (payload) FROM STDIN") as copy:
            for offset in range(0, rows, 5000):
                copy.write(block if rows - offset >= 5000 else "{}\n" * (rows - offset))
        seconds = time.perf_counter() - started
    return {"rows": rows, "rows_per_s": rate(rows, seconds), "seconds": round(seconds, 3),
            "postgres_cost": meter.stop(rows)}


def _insert_loop(env: Env, meter: CostMeter, rows: int) -> dict[str, Any]:
    """``INSERT ... RETURNING id`` of one row, autocommit: one round trip and one commit per row."""
    with _raw_connection(env) as conn:
        conn.execute(INSERT)  # warm: plan and connection
        meter.start()
        started = time.perf_counter()
        for _ in range(rows):
            conn.execute(INSERT).fetchone()
        seconds = time.perf_counter() - started
    return {"rows": rows, "rows_per_s": rate(rows, seconds), "seconds": round(seconds, 3),
            "postgres_cost": meter.stop(rows)}


def _claim_loop(env: Env, meter: CostMeter, tmp: Path, rows: int, batch: int, connections: int) -> dict[str, Any]:
    """Fill the table with ``rows`` runnable rows, then drain it from ``connections`` processes."""
    env.conn.execute(f"TRUNCATE {TABLE}")
    env.conn.execute(f"INSERT INTO {TABLE} (payload) SELECT '{{}}' FROM generate_series(1, %s)", (rows,))
    env.conn.execute(f"VACUUM ANALYZE {TABLE}")
    group = Children(_drain_main, [(env.url, batch)] * connections, "pgq-bench-raw")
    group.start()
    meter.start()
    bar = Progress(env, rows, f"raw SKIP LOCKED loop, {connections} connection(s)")
    started = group.release()
    try:
        follow([group], started, until=lambda counts, elapsed: False, timeout=600, progress=bar)
    finally:
        bar.close()
    group.join()
    seconds = max(group.stamps()) - started
    drained = group.done()
    return {"connections": connections, "jobs": drained, "jobs_per_s": rate(drained, seconds),
            "seconds": round(seconds, 3), "postgres_cost": meter.stop(drained)}


def _drain_main(url: str, batch: int, line: Line) -> None:
    """One raw consumer: claim a batch, ack it, until nothing is left; stamp the end."""
    os.environ["PGAPPNAME"] = f"{APP_PREFIX}-raw"
    with psycopg.connect(url, autocommit=True) as conn:
        line.ready.set()
        line.go.wait()
        while True:
            ids = [row[0] for row in conn.execute(CLAIM, (batch,))]
            if not ids:
                break
            conn.execute(ACK, (ids,))
            line.counter.value += len(ids)
        line.stamp.value = time.time()


def _notify_probe(env: Env, tmp: Path, jobs: int, gap_ms: float) -> tuple[dict[str, Any], np.ndarray]:
    env.conn.execute(f"TRUNCATE {TABLE}")
    path = str(tmp / f"listener-{time.monotonic_ns()}.bin")
    group = Children(_listen_main, [(env.url, path)], "pgq-bench-raw-listener")
    group.start()
    group.release()
    with _raw_connection(env) as conn:
        def send() -> int:
            with conn.transaction():
                (job_id,) = conn.execute(INSERT).fetchone()  # type: ignore[misc]
                conn.execute(f"NOTIFY {CHANNEL}")
            return int(job_id)

        sent = one_at_a_time(env, group, send, jobs=jobs, warmup=5, gap_ms=gap_ms, label="raw INSERT+NOTIFY")
        conn.execute(f"NOTIFY {CHANNEL}, 'stop'")
    group.join()
    claims = read_records([path])
    claimed = by_id(claims[:, 0], claims[:, 2], sent[:, 0])
    pickup = (claimed - sent[:, 1]) * 1000.0
    pickup = pickup[~np.isnan(pickup)]
    return percentiles(pickup), pickup


def _listen_main(url: str, path: str, line: Line) -> None:
    """LISTEN; on each notification claim what is runnable; record (id, notified, claimed)."""
    os.environ["PGAPPNAME"] = f"{APP_PREFIX}-raw"
    recorder = Recorder(line.counter)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"LISTEN {CHANNEL}")
        line.ready.set()
        line.go.wait()
        while True:
            # One notification at a time: a query may not run inside the notifies() generator.
            (note,) = conn.notifies(stop_after=1)
            if note.payload == "stop":
                break
            notified = time.time()
            ids = [row[0] for row in conn.execute(CLAIM, (100,))]
            claimed = time.time()
            if ids:
                conn.execute(ACK, (ids,))
            for job_id in ids:
                recorder.add(job_id, notified, claimed)
    recorder.dump(path)
