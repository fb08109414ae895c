"""Releasing waiting children reads what it releases, not the tables (revision 0022).

With many chains of waiting jobs, and statistics that let the planner choose
hash joins over whole tables, completing a batch of parents (complete_jobs,
which calls release_waiting_children) must reach the children and their other
parents through indexes: no sequential scan of jobs or job_dependencies, and
a number of rows read proportional to the batch, not to the tables. Fails on
release_waiting_children 001 (its lock and release statements scanned both
tables: every row of each, per completion batch). And a batch of jobs without
children does not read the edges of the graphs kept in the table (fails on
complete_jobs 003, whose EXISTS over job_dependencies was a sequential scan).
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import factories
from test_housekeeping_plans import inner, nested_plans, table_reads

pytestmark = pytest.mark.integration

CHAINS = 5_000  # running parents, each with one waiting child
BATCH = 100  # parents completed at once


def fill_chains(conn: psycopg.Connection[Any]) -> tuple[Any, list[int]]:
    """``CHAINS`` running parents of one worker, each with a waiting child (whose other
    parent, for every second child, is a completed job); ANALYZE. Returns the worker and
    the parents' ids."""
    first = factories.insert_job(conn, status="running")
    worker = factories.job(conn, first)["worker_id"]
    parents = [first] + [int(r[0]) for r in conn.execute(
        "INSERT INTO pgq.jobs (task, status, attempts, worker_id, started_at)"
        " SELECT 't', 'running', 1, %s, now() FROM generate_series(2, %s) RETURNING id",
        (worker, CHAINS)).fetchall()]
    done = factories.insert_job(conn, status="completed")
    conn.execute(
        "WITH p AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM pgq.jobs WHERE id = ANY (%s)),"
        " c AS (INSERT INTO pgq.jobs (task, status, payload)"
        "       SELECT 't', 'waiting', jsonb_build_object('parent', p.id) FROM p RETURNING id, payload),"
        " e AS (INSERT INTO pgq.job_dependencies (parent_id, child_id)"
        "       SELECT (c.payload ->> 'parent')::bigint, c.id FROM c)"
        " INSERT INTO pgq.job_dependencies (parent_id, child_id)"
        " SELECT %s, c.id FROM c WHERE c.id %% 2 = 0", (parents, done))
    conn.execute("ANALYZE")
    return worker, parents


def test_completing_parents_releases_their_children_by_index(conn: psycopg.Connection[Any]) -> None:
    worker, parents = fill_chains(conn)
    batch = parents[:BATCH]
    before = {t: table_reads(conn, t)[1] for t in ("jobs", "job_dependencies")}

    plans = nested_plans(conn, "SELECT * FROM pgq.complete_jobs(%s, %s::bigint[], %s::int[])",
                         (worker, batch, [1] * BATCH))

    released = conn.execute(
        "SELECT count(*) FROM pgq.jobs AS c JOIN pgq.job_dependencies AS d ON d.child_id = c.id"
        " WHERE d.parent_id = ANY (%s) AND c.status = 'queued'", (batch,)).fetchone()
    assert released == (BATCH,)
    for text in ("FOR NO KEY UPDATE", "SET status = 'queued'"):
        plan = inner(plans, text)
        assert "Seq Scan on jobs" not in plan, plan
        assert "Seq Scan on job_dependencies" not in plan, plan
    # Each completed parent: its row, its child's edge and row, the child's parents' edges
    # and rows (two at most). Far below one pass over either table.
    assert_read_little(conn, before)


def test_completing_jobs_without_children_does_not_read_the_graphs_kept(conn: psycopg.Connection[Any]) -> None:
    worker, _ = fill_chains(conn)
    plain = [int(r[0]) for r in conn.execute(
        "INSERT INTO pgq.jobs (task, status, attempts, worker_id, started_at)"
        " SELECT 't', 'running', 1, %s, now() FROM generate_series(1, %s) RETURNING id", (worker, BATCH)).fetchall()]
    before = {t: table_reads(conn, t)[1] for t in ("jobs", "job_dependencies")}

    plans = nested_plans(conn, "SELECT * FROM pgq.complete_jobs(%s, %s::bigint[], %s::int[])",
                         (worker, plain, [1] * BATCH))

    assert conn.execute("SELECT count(*) FROM pgq.jobs WHERE id = ANY (%s) AND status = 'completed'",
                        (plain,)).fetchone() == (BATCH,)
    assert not [p for p in plans if "Seq Scan on job_dependencies" in p], plans
    assert_read_little(conn, before)


def assert_read_little(conn: psycopg.Connection[Any], before: dict[str, int]) -> None:
    """Since ``before`` (rows read per table), each table was read far less than one pass over it."""
    for table, at in before.items():
        read = table_reads(conn, table)[1] - at
        assert read < 20 * BATCH, (table, read)
