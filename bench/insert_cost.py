"""What a one-row INSERT into ``pgq.jobs`` pays for the table's CHECK constraints: an ablation.

``python -m bench.insert_cost [--admin-url URL] [--inserts 2000] [--rounds 5]``
migrates a scratch database (``pgq_insert_cost``), then copies ``pgq.jobs``
(``LIKE … INCLUDING ALL``: columns, defaults, CHECKs, indexes; no trigger) into
three variants and times, round after round with the variants alternating,
``--inserts`` autocommit one-row INSERTs of single enqueue's statement
(prepared) into each:

- ``pgq``: ``pgq.jobs`` itself (its NOTIFY trigger included);
- ``copy``: the copy, as the table is, without the trigger;
- ``domains``: the copy with every single-column CHECK moved into a domain
  over the column's type (PostgreSQL checks a domain value when one is
  assigned, from an expression it plans once per backend, where it prepares
  every CHECK of the table again for each statement, and evaluates all of
  them on every UPDATE too); the cross-column CHECKs stay;
- ``nocheck``: the copy without any CHECK (the bound: what the constraints cost);
- ``raw``: a three-column table with one partial index (the bench's raw ceiling).

Per variant: the median microseconds of wall time per INSERT (the round
trip included) and of the backend's CPU (``/proc/PID/stat``; the server must
run on this machine); then ``--updates`` UPDATEs of 100 of its rows, setting
what a claim sets (status, owner, start, attempts), and the backend's CPU per
row updated. One JSON record on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import psycopg

import pgq
from pgq.migrate import upgrade

from .memory_cost import process_cpu

DATABASE = "pgq_insert_cost"
VARIANTS = ("pgq", "copy", "domains", "nocheck", "raw")
INSERT = ("INSERT INTO {table} (task, payload, queue, priority, max_attempts)"
          " VALUES (%s::text, %s::text::jsonb, %s::text, %s::smallint, %s::int) RETURNING id")
RAW_INSERT = "INSERT INTO ablation.raw (payload) VALUES (%s::text::jsonb) RETURNING id"


def _single_column_checks(conn: psycopg.Connection[Any], table: str) -> dict[str, list[tuple[str, str]]]:
    """column -> [(constraint name, its CHECK with the column written VALUE)] for ``table``."""
    rows = conn.execute(
        "SELECT a.attname, c.conname, pg_get_constraintdef(c.oid)"
        " FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]"
        " WHERE c.conrelid = %s::regclass AND c.contype = 'c' AND cardinality(c.conkey) = 1 ORDER BY 2",
        (table,)).fetchall()
    checks: dict[str, list[tuple[str, str]]] = {}
    for column, name, definition in rows:
        # pg_get_constraintdef names the column alone: \b keeps effective_priority for priority.
        body = conn.execute(r"SELECT regexp_replace(%s, '\m' || %s || '\M', 'VALUE', 'g')",
                            (definition, column)).fetchone()
        assert body is not None
        checks.setdefault(column, []).append((name, body[0]))
    return checks


def _scalar(conn: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def prepare(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The ablation schema: the copies of ``pgq.jobs`` and the raw table; what each holds."""
    conn.execute("DROP SCHEMA IF EXISTS ablation CASCADE")
    conn.execute("CREATE SCHEMA ablation")
    for name in ("copy", "domains", "nocheck"):
        conn.execute(f"CREATE TABLE ablation.{name} (LIKE pgq.jobs INCLUDING ALL)")
    for (name,) in conn.execute("SELECT conname FROM pg_constraint WHERE conrelid = 'ablation.nocheck'::regclass"
                                " AND contype = 'c'").fetchall():
        conn.execute(f'ALTER TABLE ablation.nocheck DROP CONSTRAINT "{name}"')
    for column, checks in _single_column_checks(conn, "ablation.domains").items():
        (base,) = conn.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
                               " WHERE attrelid = 'ablation.domains'::regclass AND attname = %s",
                               (column,)).fetchone() or ("",)
        constraints = " ".join(f'CONSTRAINT "{name}" {body}' for name, body in checks)
        conn.execute(f'CREATE DOMAIN ablation."{column}_t" AS {base} {constraints}')
        for name, _ in checks:
            conn.execute(f'ALTER TABLE ablation.domains DROP CONSTRAINT "{name}"')
        conn.execute(f'ALTER TABLE ablation.domains ALTER COLUMN "{column}" TYPE ablation."{column}_t"')
    conn.execute("CREATE TABLE ablation.raw (id bigserial PRIMARY KEY, payload jsonb NOT NULL,"
                 " status text NOT NULL DEFAULT 'queued')")
    conn.execute("CREATE INDEX ON ablation.raw (id) WHERE status = 'queued'")
    layout = {table: _scalar(conn, "SELECT count(*) FILTER (WHERE contype = 'c') FROM pg_constraint"
                                   " WHERE conrelid = %s::regclass", table)
              for table in ("pgq.jobs", "ablation.copy", "ablation.domains", "ablation.nocheck")}
    domains = conn.execute("SELECT count(*) FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
                           " WHERE a.attrelid = 'ablation.domains'::regclass AND t.typtype = 'd'").fetchone()
    return {"check_constraints": layout, "domain_columns": domains[0] if domains else 0}


def one_run(url: str, variant: str, inserts: int) -> dict[str, float]:
    """``inserts`` autocommit one-row INSERTs into ``variant``: µs of wall and backend CPU per row."""
    with psycopg.connect(url, autocommit=True) as conn:
        params: tuple[Any, ...]
        if variant == "raw":
            statement, params = RAW_INSERT, ('{"n": 1}',)
        else:
            table = "pgq.jobs" if variant == "pgq" else f"ablation.{variant}"
            statement, params = INSERT.format(table=table), ("bench.task", '{"n": 1}', "default", 3, 25)
        for _ in range(20):  # warm: the statement prepared, the catalog cached
            conn.execute(statement, params, prepare=True)
        cpu, wall = process_cpu(conn.info.backend_pid), time.perf_counter()
        for _ in range(inserts):
            conn.execute(statement, params, prepare=True)
        wall, cpu = time.perf_counter() - wall, process_cpu(conn.info.backend_pid) - cpu
    return {"wall_us": round(wall / inserts * 1e6, 1), "backend_cpu_us": round(cpu / inserts * 1e6, 1)}


UPDATE = ("UPDATE {table} SET status = %s::pgq.job_status, worker_id = gen_random_uuid(), started_at = now(),"
          " attempts = 1 - attempts WHERE id = ANY(%s::bigint[])")


def one_update_run(url: str, variant: str, statements: int, rows: int = 100) -> dict[str, float]:
    """``statements`` UPDATEs of ``rows`` rows each (status, owner, start and attempts, as a claim
    writes them), alternately to running and back: µs of backend CPU per row updated."""
    table = "pgq.jobs" if variant == "pgq" else f"ablation.{variant}"
    with psycopg.connect(url, autocommit=True) as conn:
        ids = [r[0] for r in conn.execute(f"SELECT id FROM {table} ORDER BY id LIMIT %s", (rows,)).fetchall()]
        statement = UPDATE.format(table=table)
        cpu = process_cpu(conn.info.backend_pid)
        for i in range(statements):
            conn.execute(statement, ("running" if i % 2 == 0 else "queued", ids), prepare=True)
        cpu = process_cpu(conn.info.backend_pid) - cpu
    return {"update_backend_cpu_us_per_row": round(cpu / (statements * len(ids)) * 1e6, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--inserts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--updates", type=int, default=200, help="UPDATEs of 100 rows per variant and round")
    args = parser.parse_args()
    url = args.admin_url.rsplit("/", 1)[0] + "/" + DATABASE
    with psycopg.connect(args.admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{DATABASE}"')
    try:
        upgrade(pgq.Settings(database_url=url))
        with psycopg.connect(url, autocommit=True) as conn:
            layout = prepare(conn)
        runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for variant in VARIANTS:
                runs[variant].append(one_run(url, variant, args.inserts))
                if variant != "raw":
                    runs[variant][-1].update(one_update_run(url, variant, args.updates))
        medians = {v: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for v, rs in runs.items()}
        print(json.dumps({"inserts": args.inserts, "rounds": args.rounds, "load_average": os.getloadavg(), **layout,
                          "median": medians, "runs": runs}, indent=2))
    finally:
        with psycopg.connect(args.admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


if __name__ == "__main__":
    main()
