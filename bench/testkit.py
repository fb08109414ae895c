"""What a test pays for its own database: a clone of the migrated template vs migrating a fresh one.

``python -m bench.testkit --url ADMIN_URL --pairs 8`` runs, interleaved (A B A B ...):

- A, the kit's way (``pgq_db_url``, without the clones made ahead): ``CREATE DATABASE ... TEMPLATE``
  of a template migrated once (a first enqueue on it follows: pool opened, schema checked);
- B, the naive way: ``CREATE DATABASE``, ``pgq migrate`` (``pgq.migrate.upgrade``), the same
  first enqueue.

The first enqueue and the DROP are timed apart (the same on both sides; the kit drops in
the background, and a DROP forces a checkpoint on PostgreSQL 15). Prints one JSON record: each run's milliseconds,
the medians, the ratio A/B, the load average before and after, the server and pgq's commit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any
from pathlib import Path

import psycopg
from psycopg import sql

import pgq
from pgq.migrate import upgrade
from pgq.testing.databases import PgServer, create_template, database_name, drop_database, find_running


def _first_enqueue(server: PgServer, name: str) -> None:
    with pgq.connect(server.url_for(name), schema="pgq", redis_url=None, strict_tasks=False) as q:
        q.enqueue("bench.noop")


def _timed(step: Callable[[], Any]) -> float:
    started = time.perf_counter()
    step()
    return 1000 * (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="admin URL (default: the local server)")
    parser.add_argument("--pairs", type=int, default=8)
    args = parser.parse_args()
    server, tried = find_running(args.url, "--url")
    if server is None:
        raise SystemExit("no server: " + "; ".join(tried))
    strategy = sql.SQL(" STRATEGY FILE_COPY" if server.version_num >= 150000 else "")
    load_before = os.getloadavg()
    with psycopg.connect(server.admin_url, autocommit=True) as admin:
        template = create_template(admin, server, "pgq")

        def clone(name: str) -> None:
            admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
                          + strategy)

        def migrate(name: str) -> None:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            upgrade(pgq.Settings(database_url=server.url_for(name), schema="pgq"))

        runs: dict[str, list[float]] = {"clone": [], "migrate": [], "first_enqueue": [], "drop": []}

        def one(way: Callable[[str], None], key: str) -> None:
            name = database_name()
            # What a test waits for: its database made, then a first enqueue (the queue's pool
            # opened, the schema checked): the same on both sides, timed apart.
            runs[key].append(_timed(lambda: way(name)))
            runs["first_enqueue"].append(_timed(lambda: _first_enqueue(server, name)))
            runs["drop"].append(_timed(lambda: drop_database(admin, name)))  # the kit drops in the background

        try:
            for _ in range(args.pairs):
                one(clone, "clone")
                one(migrate, "migrate")
        finally:
            drop_database(admin, template)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    medians = {k: statistics.median(v) for k, v in runs.items()}
    print(json.dumps({
        "bench": "testkit", "pairs": args.pairs, "server": server.describe(), "commit": commit,
        "runs_ms": {k: [round(x, 1) for x in v] for k, v in runs.items()},
        "median_ms": {k: round(v, 1) for k, v in medians.items()},
        "clone_over_migrate": round(medians["clone"] / medians["migrate"], 3),
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
    }))


if __name__ == "__main__":
    main()
