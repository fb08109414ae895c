"""The dashboard's cost on a million jobs: every page's time, and the plan of every statement it sends.

``python -m bench.dashboard --url postgresql://postgres@127.0.0.1/postgres [--jobs 1000000] [--rounds 5]``

Creates a database of its own with two pgq schemas seeded alike (statuses in
the proportions of a busy queue that keeps finished jobs for a week): ``small``
with ``--jobs / 100`` jobs, ``large`` with ``--jobs``. Each page is requested
from a dashboard served by uvicorn over each schema, interleaved (small,
large, small, large, ...), and the median times are reported with their ratio:
a page whose reads do not grow with the table keeps a ratio near 1. Every
statement a page sent is then run again under ``EXPLAIN (ANALYZE, BUFFERS)``
on the large schema: its time, the buffers it touched, the indexes it read and
any sequential scan of a big table (there must be none). Prints one JSON
object; the database and the schemas' roles are dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import uvicorn
from psycopg import sql
from psycopg.conninfo import make_conninfo
from sqlalchemy import event

import pgq
from pgq import migrate
from pgq.dashboard import Access, create_app
from pgq.dashboard.app import make_engine

# Per 1,000 jobs: how many end in each status (a week of finished jobs kept, a live backlog).
MIX = (("completed", 910), ("cancelled", 20), ("dead", 20), ("queued", 40), ("retrying", 5), ("running", 2),
       ("waiting", 3))
ERRORS = ("SMTPServerDisconnected: Connection unexpectedly closed", "TimeoutError: upstream took 30 s",
          "KeyError: 'customer_id'", "ConnectionResetError: [Errno 104] Connection reset by peer",
          "ValueError: invalid literal for int() with base 10: 'n/a'")
BIG_TABLES = {"jobs", "job_executions", "dead_letter_queue", "worker_health_logs", "job_dependencies"}
WORKERS = 16

SEED = """
INSERT INTO {s}.workers (id, hostname, pid, queues, capacity, current_load, health_score)
SELECT ('00000000-0000-0000-0000-' || lpad(w::text, 12, '0'))::uuid, 'bench-' || w, 1000 + w,
       ARRAY['q' || (w % 8), 'q' || ((w + 1) % 8)], 16, w % 16, 0.5 + (w % 5) / 10.0
FROM generate_series(1, {workers}) AS w;

INSERT INTO {s}.worker_health_logs (worker_id, metric_type, metric_value, logged_at, interval_seconds,
                                     jobs_completed, jobs_failed, error_rate, latency_p50_ms, health_score)
SELECT w.id, 'heartbeat', w.health_score, now() - make_interval(secs => k * 30), 30, 100, k % 3,
       (k % 3) / 100.0, 20 + k % 7, w.health_score
FROM {s}.workers AS w, generate_series(0, 119) AS k;

WITH mix(status, lo, hi) AS (SELECT * FROM unnest(%(statuses)s::text[], %(lows)s::int[], %(highs)s::int[])),
numbered AS (
    SELECT n, m.status, now() - make_interval(secs => (%(jobs)s - n) * %(spacing)s) AS t
    FROM generate_series(1, %(jobs)s) AS n JOIN mix AS m ON n %% 1000 >= m.lo AND n %% 1000 < m.hi
)
INSERT INTO {s}.jobs (queue, task, payload, priority, status, run_at, attempts, max_attempts, worker_id,
                      started_at, finished_at, last_error, unique_key, result, created_at, updated_at)
SELECT 'q' || (n %% 8), 'task_' || (n %% 20), jsonb_build_object('n', n, 'to', 'user' || n || '@example.org'),
       1 + n %% 5, status::{s}.job_status,
       CASE status WHEN 'retrying' THEN now() + interval '1 minute' ELSE t END,
       CASE status WHEN 'dead' THEN 3 WHEN 'queued' THEN 0 WHEN 'waiting' THEN 0 WHEN 'cancelled' THEN 0 ELSE 1 END,
       3,
       CASE WHEN status = 'running' THEN ('00000000-0000-0000-0000-' || lpad((1 + n %% {workers})::text, 12, '0'))::uuid END,
       CASE WHEN status IN ('completed', 'dead', 'running') THEN t + interval '0.4 s' END,
       CASE WHEN status IN ('completed', 'dead', 'cancelled') THEN t + interval '1 s' END,
       CASE WHEN status IN ('dead', 'retrying') THEN (%(errors)s::text[])[1 + n %% 5] || ' (job ' || n || ')' END,
       CASE WHEN n %% 10 = 0 THEN 'key:' || n END,
       CASE WHEN status = 'completed' THEN '{{"ok": true}}'::jsonb END,
       t, t
FROM numbered;

INSERT INTO {s}.job_executions (job_id, life, attempt, worker_id, started_at, finished_at, outcome, error_type,
                                error_message, traceback)
SELECT j.id, 1, a, j.worker_id, j.created_at + make_interval(secs => a), j.created_at + make_interval(secs => a + 0.3),
       CASE WHEN j.status = 'completed' THEN 'completed' ELSE 'failed' END::{s}.attempt_outcome,
       CASE WHEN j.status = 'dead' THEN split_part(j.last_error, ':', 1) END,
       CASE WHEN j.status = 'dead' THEN split_part(j.last_error, ': ', 2) END,
       CASE WHEN j.status = 'dead' THEN 'Traceback (most recent call last):\n  File "app.py", line 1\n' || j.last_error END
FROM {s}.jobs AS j, generate_series(1, j.attempts) AS a
WHERE j.status IN ('completed', 'dead');

INSERT INTO {s}.dead_letter_queue (job_id, queue, task, reason, last_error, moved_at)
SELECT id, queue, task, 'exhausted', last_error, finished_at FROM {s}.jobs WHERE status = 'dead';

-- Each waiting job waits on a queued one (47 ids before it: n % 1000 = 987 -> 940).
INSERT INTO {s}.job_dependencies (parent_id, child_id)
SELECT id - 47, id FROM {s}.jobs WHERE status = 'waiting';

INSERT INTO {s}.schedules (name, cron, task, queue, next_tick)
SELECT 'schedule-' || k, '*/' || (k + 1) || ' * * * *', 'task_' || k, 'q' || (k % 8), now() + interval '1 minute'
FROM generate_series(1, 20) AS k;
"""


def seed(conn: psycopg.Connection[Any], schema: str, jobs: int) -> None:
    lows, highs, statuses, at = [], [], [], 0
    for status, count in MIX:
        statuses.append(status)
        lows.append(at)
        highs.append(at + count)
        at += count
    script = SEED.replace("{s}", sql.Identifier(schema).as_string(conn)).replace("{workers}", str(WORKERS))
    params = {"statuses": statuses, "lows": lows, "highs": highs, "jobs": jobs, "spacing": 604800 / jobs,
              "errors": list(ERRORS)}
    # One statement at a time: only the jobs' INSERT takes parameters (its % are doubled).
    for statement in script.replace("{{", "{").replace("}}", "}").split(";\n\n"):
        conn.execute(statement, params if "%(jobs)s" in statement else None)  # type: ignore[call-overload]
    conn.execute(sql.SQL("SELECT {}.pause_queue('q7')").format(sql.Identifier(schema)))


def serve(settings: pgq.Settings, captured: list[tuple[str, Any]]) -> tuple[str, uvicorn.Server, threading.Thread]:
    engine = make_engine(settings)

    @event.listens_for(engine, "before_cursor_execute")
    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            captured.append((statement, parameters))

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(settings, Access(), engine=engine), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server, thread


def plan_summary(conn: psycopg.Connection[Any], statement: str, parameters: Any) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of one statement: time, buffers, indexes read, sequential scans of big tables."""
    row = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}", parameters).fetchone()  # type: ignore[call-overload]
    assert row is not None
    top = row[0][0]
    indexes: set[str] = set()
    seq_scans: set[str] = set()

    def walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield node
        for child in node.get("Plans", []):
            yield from walk(child)

    for node in walk(top["Plan"]):
        if "Index Name" in node:
            indexes.add(node["Index Name"])
        if node["Node Type"] == "Seq Scan" and node.get("Relation Name") in BIG_TABLES:
            seq_scans.add(node["Relation Name"])
    plan = top["Plan"]
    return {"ms": round(top["Execution Time"], 2), "buffers": plan.get("Shared Hit Blocks", 0) + plan.get(
        "Shared Read Blocks", 0), "rows": plan.get("Actual Rows"), "indexes": sorted(indexes),
        "seq_scans_of_big_tables": sorted(seq_scans), "statement": " ".join(statement.split())[:160]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="an admin URL (a role that may CREATE DATABASE and roles)")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    name = f"pgq_dash_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(args.url, dbname=name)
    sizes = {"small": max(args.jobs // 100, 1000), "large": args.jobs}
    record: dict[str, Any] = {"jobs": sizes, "rounds": args.rounds, "load_before": os.getloadavg()}
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for schema, jobs in sizes.items():
                started = time.monotonic()
                migrate.upgrade(pgq.Settings(database_url=url, schema=schema))
                seed(conn, schema, jobs)
                conn.execute("VACUUM ANALYZE")
                record[f"seed_seconds_{schema}"] = round(time.monotonic() - started, 1)
            ids = {schema: {
                "dead": conn.execute(sql.SQL("SELECT max(job_id) FROM {}.dead_letter_queue").format(
                    sql.Identifier(schema))).fetchone()[0],  # type: ignore[index]
                "waiting": conn.execute(sql.SQL("SELECT max(id) FROM {}.jobs WHERE status = 'waiting'").format(
                    sql.Identifier(schema))).fetchone()[0],  # type: ignore[index]
            } for schema in sizes}
        pages = {
            "overview": lambda s: "/",
            "jobs (no filter)": lambda s: "/jobs",
            "jobs status=dead queue=q3": lambda s: "/jobs?status=dead&queue=q3",
            "jobs error text": lambda s: "/jobs?error=reset+by+peer",
            "jobs matching nothing": lambda s: "/jobs?task=no_such_task",
            "jobs unique key": lambda s: f"/jobs?unique_key=key:{sizes[s] - 10}",
            "job (dead, 3 attempts)": lambda s: f"/jobs/{ids[s]['dead']}",
            "job (waiting on a parent)": lambda s: f"/jobs/{ids[s]['waiting']}",
            "workers": lambda s: "/workers",
            "dead letters": lambda s: "/dlq",
            "dead letters, clustered": lambda s: "/dlq?clusters=1",
            "schedules": lambda s: "/schedules",
        }
        captured: dict[str, list[tuple[str, Any]]] = {s: [] for s in sizes}
        servers = {s: serve(pgq.Settings(database_url=url, schema=s), captured[s]) for s in sizes}
        times: dict[str, dict[str, list[float]]] = {p: {s: [] for s in sizes} for p in pages}
        statements: dict[str, list[tuple[str, Any]]] = {}
        with httpx.Client(timeout=120) as client:
            for page, path in pages.items():
                for s in sizes:  # warm-up, and the statements of each page (large schema)
                    captured[s].clear()
                    assert client.get(servers[s][0] + path(s)).status_code == 200, (page, s)
                statements[page] = list(captured["large"])
                for _ in range(args.rounds):
                    for s in sizes:  # interleaved: small, large, small, large ...
                        started = time.perf_counter()
                        client.get(servers[s][0] + path(s)).raise_for_status()
                        times[page][s].append((time.perf_counter() - started) * 1000)
        for _url, server, thread in servers.values():
            server.should_exit = True
            thread.join(timeout=30)
        record["pages_ms"] = {page: {s: round(statistics.median(v), 1) for s, v in by.items()} | {
            "ratio": round(statistics.median(by["large"]) / statistics.median(by["small"]), 2)}
            for page, by in times.items()}
        with psycopg.connect(url, autocommit=True) as conn:
            record["plans"] = {page: [plan_summary(conn, st, params) for st, params in found]
                               for page, found in statements.items()}
        record["load_after"] = os.getloadavg()
    finally:
        with psycopg.connect(args.url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        for schema in sizes:
            migrate.drop_roles(pgq.Settings(database_url=args.url, schema=schema))
    print(json.dumps(record, indent=1, default=str))


if __name__ == "__main__":
    main()
