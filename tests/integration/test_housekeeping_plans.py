"""Housekeeping reads what it works on, not the table (revision 0005).

With many finished jobs kept for the retention period, and statistics that
make the planner choose sequential scans wherever no index serves:

- deleting jobs (pruning, purging) does not scan the dead letter queue (the
  ON DELETE CASCADE has an index on dead_letter_queue.job_id);
- prune_jobs reads one batch in index order (no Seq Scan, no Sort of the
  backlog), purge_dead_jobs and the bulk requeue (its unique-key check
  included) read dead jobs through their indexes;
- queue_stats reads partial indexes only.

The plans are those of the statements inside the stored functions, as
auto_explain reports them (nested statements, sent to the client as
NOTICEs), so a test sees what the function really runs. Each test fails on
revision 0004 (checked by running this module against a checkout of the
commit before it, with ``life`` left out of ``fill``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest

import factories

pytestmark = pytest.mark.integration

FINISHED = 20_000  # completed jobs kept for the retention period
DEAD = 2_000  # dead jobs, each with its dead letter


def fill(conn: psycopg.Connection[Any], *, finished: int = FINISHED, dead: int = DEAD,
         keyed_dead: bool = False) -> None:
    """``finished`` completed jobs (finished 8 days ago, with an execution each), ``dead`` dead jobs
    with their dead letters (optionally with unique keys), a few live jobs; then ANALYZE."""
    conn.execute(
        "INSERT INTO pgq.jobs (task, status, attempts, worker_id, started_at, finished_at, unique_key)"
        " SELECT 't', 'completed', 1, gen_random_uuid(), t, t, 'done:' || g"
        " FROM generate_series(1, %s) AS g, LATERAL (SELECT now() - interval '8 days' + g * interval '1 ms' AS t) AS x",
        (finished,))
    conn.execute(
        "INSERT INTO pgq.job_executions (job_id, life, attempt, worker_id, started_at, finished_at, outcome)"
        " SELECT id, 1, 1, worker_id, started_at, finished_at, 'completed' FROM pgq.jobs")
    conn.execute(
        "INSERT INTO pgq.jobs (task, status, attempts, max_attempts, finished_at, last_error, unique_key)"
        " SELECT 't', 'dead', 1, 1, now() - interval '1 day' + g * interval '1 ms', 'E: x',"
        "        CASE WHEN %s THEN 'key:' || g END"
        " FROM generate_series(1, %s) AS g", (keyed_dead, dead))
    conn.execute(
        "INSERT INTO pgq.dead_letter_queue (job_id, queue, task, reason, last_error, moved_at)"
        " SELECT id, queue, task, 'exhausted', last_error, finished_at FROM pgq.jobs WHERE status = 'dead'")
    for status in ("queued", "retrying", "running", "waiting"):
        factories.insert_job(conn, status=status)
    conn.execute("ANALYZE")


def nested_plans(conn: psycopg.Connection[Any], statement: str, params: tuple[Any, ...] = ()) -> list[str]:
    """Run ``statement``; return the plan of every statement it ran, those inside functions and
    triggers included (auto_explain, reported as NOTICEs)."""
    plans: list[str] = []

    def collect(diag: psycopg.errors.Diagnostic) -> None:
        if diag.message_primary and "Query Text:" in diag.message_primary:
            plans.append(diag.message_primary)

    conn.add_notice_handler(collect)
    try:
        conn.execute("LOAD 'auto_explain'")
        for name, value in (("log_min_duration", "0"), ("log_nested_statements", "on"),
                            ("log_level", "notice"), ("log_analyze", "off")):
            conn.execute("SELECT set_config(%s, %s, false)", (f"auto_explain.{name}", value))
        conn.execute(statement, params).fetchall()
    finally:
        conn.execute("SELECT set_config('auto_explain.log_min_duration', '-1', false)")
        conn.remove_notice_handler(collect)
    assert plans, "auto_explain reported no plan"
    return plans


def inner(plans: list[str], text: str) -> str:
    """The plan of the one nested statement whose text contains ``text``."""
    found = [p for p in plans if text in p.split("Query Text:", 1)[1].split("\n", 1)[0]
             or text in p.split("Query Text:", 1)[1]]
    assert found, f"no statement with {text!r} among:\n" + "\n---\n".join(plans)
    return "\n---\n".join(found)


def table_reads(conn: psycopg.Connection[Any], table: str) -> tuple[int, int]:
    """(sequential scans, rows read by them + rows fetched by index scans) of pgq.<table> so far."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute("SELECT seq_scan, seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_user_tables"
                       " WHERE relid = to_regclass(%s)", (f"pgq.{table}",)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


# ---------------------------------------------------------------- defect 2: the dead letter cascade


def test_deleting_jobs_does_not_scan_the_dead_letter_queue(conn: psycopg.Connection[Any], now: dt.datetime) -> None:
    fill(conn)
    scans_before, _ = table_reads(conn, "dead_letter_queue")

    pruned = conn.execute("SELECT pgq.prune_jobs(interval '7 days', 500)").fetchone()
    purged = conn.execute("SELECT count(*) FROM pgq.purge_dead_jobs()").fetchone()

    scans_after, _ = table_reads(conn, "dead_letter_queue")
    assert (pruned, purged) == ((500,), (DEAD,))
    # One scan per deleted job before revision 0005 (2,500 here); none now.
    assert scans_after == scans_before
    assert factories.table_counts(conn)["dead_letter_queue"] == 0  # the cascade did delete them


def test_the_cascade_looks_dead_letters_up_by_index(conn: psycopg.Connection[Any]) -> None:
    fill(conn, finished=100)
    plans = nested_plans(conn, "SELECT count(*) FROM pgq.purge_dead_jobs()")
    cascade = inner(plans, 'DELETE FROM ONLY "pgq"."dead_letter_queue"')
    assert "Seq Scan" not in cascade and "dead_letter_queue_job_idx" in cascade, cascade


# ---------------------------------------------------------------- defect 3: pruning reads its batch


def test_prune_jobs_reads_one_batch_in_index_order(conn: psycopg.Connection[Any]) -> None:
    fill(conn)
    _, rows_before = table_reads(conn, "jobs")

    plans = nested_plans(conn, "SELECT pgq.prune_jobs(interval '7 days', 100)")

    batch = inner(plans, "FROM jobs")
    assert "jobs_finished_idx" in batch and "Seq Scan" not in batch and "Sort" not in batch, batch
    for statement in (inner(plans, "DELETE FROM job_executions"), inner(plans, "DELETE FROM jobs")):
        assert "Seq Scan" not in statement, statement
    # Rows of jobs read: the batch and its deletes, not the 20,000 finished jobs.
    _, rows_after = table_reads(conn, "jobs")
    assert rows_after - rows_before <= 1_000


# ---------------------------------------------------------------- defect 7: purge, requeue, queue_stats


def test_purge_dead_jobs_reads_dead_jobs_through_their_index(conn: psycopg.Connection[Any]) -> None:
    fill(conn)
    plans = nested_plans(conn, "SELECT count(*) FROM pgq.purge_dead_jobs(p_older_than => interval '1 hour')")
    batch = inner(plans, "status = 'dead'")
    assert "jobs_dead_idx" in batch and "Seq Scan" not in batch and "Sort" not in batch, batch
    # The deletes find jobs by primary key (job_executions, small here, may be read whole:
    # the planner's choice for 2,000 ids against 20,000 rows).
    assert "Seq Scan" not in inner(plans, "DELETE FROM jobs"), plans


def test_bulk_requeue_checks_unique_keys_through_indexes(conn: psycopg.Connection[Any]) -> None:
    fill(conn, keyed_dead=True)
    _, rows_before = table_reads(conn, "jobs")

    plans = nested_plans(conn, "SELECT count(*) FROM pgq.requeue_dead_jobs()")

    _, rows_after = table_reads(conn, "jobs")
    choice = inner(plans, "NOT EXISTS")  # the choice of ids, and the UPDATE that checks keys again
    assert "Seq Scan on jobs" not in choice, choice  # (it updates every dead letter: a scan of those is fine)
    assert "jobs_unique_key_idx" in choice and "jobs_dead_unique_key_idx" in choice and "jobs_dead_idx" in choice
    # Rows read: the dead jobs (found, then updated), not the 20,000 finished jobs with keys.
    assert rows_after - rows_before <= 3 * DEAD
    assert conn.execute("SELECT count(*) FROM pgq.jobs WHERE status = 'queued' AND life = 2").fetchone() == (DEAD,)


def test_queue_stats_reads_partial_indexes_only(conn: psycopg.Connection[Any]) -> None:
    fill(conn)
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN SELECT * FROM pgq.queue_stats").fetchall())
    assert "Seq Scan" not in plan, plan
    for index in ("jobs_waiting_idx", "jobs_claim_idx", "jobs_running_idx", "jobs_dead_idx"):
        assert index in plan, (index, plan)
    # And it counts what it should: the live jobs and the dead ones.
    counts = dict(conn.execute("SELECT status::text, sum(jobs) FROM pgq.queue_stats GROUP BY 1").fetchall())
    assert counts == {"queued": 1, "retrying": 1, "running": 1, "waiting": 1, "dead": DEAD}


def test_finished_jobs_are_estimated_from_the_statistics(conn: psycopg.Connection[Any]) -> None:
    assert conn.execute("SELECT * FROM pgq.job_status_estimates").fetchall() == []  # never analyzed
    fill(conn)
    estimates = dict(conn.execute("SELECT status::text, jobs FROM pgq.job_status_estimates").fetchall())
    # ANALYZE read the whole (small) table: the estimates are the counts, give or take rounding.
    assert estimates["completed"] == pytest.approx(FINISHED, rel=0.01)
    assert estimates["dead"] == pytest.approx(DEAD, rel=0.01)
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN SELECT * FROM pgq.job_status_estimates").fetchall())
    assert "on jobs" not in plan, plan  # statistics only: the table itself is not read
