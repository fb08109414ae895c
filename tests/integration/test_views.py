"""Views for DBAs: queue_stats, worker_status, job_history."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from factories import insert_execution, insert_job, insert_worker

pytestmark = pytest.mark.integration

MINUTE = dt.timedelta(minutes=1)


def rows(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return cur.fetchall()


def test_queue_stats_counts_jobs_per_queue_status_and_priority(conn, now):
    for _ in range(3):
        insert_job(conn, queue="emails", priority=5, run_at=now - 10 * MINUTE)
    insert_job(conn, queue="emails", priority=5, run_at=now + 10 * MINUTE)  # not due yet
    insert_job(conn, queue="emails", priority=1, run_at=now - 2 * MINUTE)
    insert_job(conn, queue="emails", status="running")
    insert_job(conn, queue="reports", status="completed")  # finished: not counted (job_status_estimates)
    insert_job(conn, queue="reports", status="cancelled")
    insert_job(conn, queue="reports", status="retrying", run_at=now - 4 * MINUTE)
    insert_job(conn, queue="reports", status="dead", priority=2, finished_at=now)
    insert_job(conn, queue="reports", status="waiting", priority=4)

    with conn.transaction():
        view_now = conn.execute("SELECT now()").fetchone()[0]
        stats = rows(conn, "SELECT queue, status::text, priority, jobs, due, oldest_due_age FROM pgq.queue_stats")

    by_key = {(r["queue"], r["status"], r["priority"]): r for r in stats}
    assert {k: (r["jobs"], r["due"]) for k, r in by_key.items()} == {
        ("emails", "queued", 5): (4, 3),
        ("emails", "queued", 1): (1, 1),
        ("emails", "running", 3): (1, 1),
        ("reports", "retrying", 3): (1, 1),
        ("reports", "dead", 2): (1, 1),
        ("reports", "waiting", 4): (1, 1),
    }
    assert by_key[("emails", "queued", 5)]["oldest_due_age"] == view_now - (now - 10 * MINUTE)
    assert by_key[("reports", "retrying", 3)]["oldest_due_age"] == view_now - (now - 4 * MINUTE)
    # Only waiting work has an age to alert on.
    assert by_key[("emails", "running", 3)]["oldest_due_age"] is None
    assert by_key[("reports", "dead", 2)]["oldest_due_age"] is None


def test_queue_stats_of_an_empty_queue_table_is_empty(conn):
    assert rows(conn, "SELECT * FROM pgq.queue_stats") == []


def test_worker_status_shows_heartbeat_age_load_and_running_jobs(conn, now):
    busy = insert_worker(conn, last_heartbeat=now - 2 * MINUTE, current_load=2, health_score=0.5, capacity=8)
    idle = insert_worker(conn, status="draining", last_heartbeat=now)
    for _ in range(2):
        insert_job(conn, status="running", worker_id=busy)
    insert_job(conn, status="completed", worker_id=busy)

    with conn.transaction():
        view_now = conn.execute("SELECT now()").fetchone()[0]
        status = {r["id"]: r for r in rows(conn, "SELECT *, status::text AS status FROM pgq.worker_status")}

    assert set(status) == {busy, idle}
    assert (status[busy]["running_jobs"], status[busy]["current_load"], status[busy]["capacity"]) == (2, 2, 8)
    assert status[busy]["health_score"] == pytest.approx(0.5)
    assert status[busy]["heartbeat_age"] == view_now - (now - 2 * MINUTE)
    assert (status[idle]["status"], status[idle]["running_jobs"]) == ("draining", 0)


def test_job_history_lists_finished_attempts_and_the_running_one(conn, worker_id, now):
    job_id = insert_job(conn, status="running", worker_id=worker_id, attempts=3, started_at=now - MINUTE)
    t0 = now - 10 * MINUTE
    insert_execution(conn, job_id, attempt=1, outcome="failed", error_type="IOError", error_message="disk",
                     started_at=t0, finished_at=t0 + dt.timedelta(seconds=2))
    insert_execution(conn, job_id, attempt=2, outcome="lost", error_type="WorkerLost", error_message="gone",
                     started_at=t0 + MINUTE, finished_at=t0 + 2 * MINUTE)
    other = insert_job(conn, status="completed")
    insert_execution(conn, other, attempt=1, outcome="completed", error_type=None, error_message=None)

    history = rows(conn, "SELECT *, job_status::text AS job_status FROM pgq.job_history WHERE job_id = %s"
                         " ORDER BY attempt", (job_id,))

    assert [(h["attempt"], h["outcome"], h["error_type"]) for h in history] == [
        (1, "failed", "IOError"), (2, "lost", "WorkerLost"), (3, "running", None)]
    assert {h["job_status"] for h in history} == {"running"}
    assert history[0]["duration_ms"] == pytest.approx(2000.0)
    assert history[2]["finished_at"] is None
    assert history[2]["worker_id"] == worker_id
    assert history[2]["duration_ms"] >= 60_000  # still running: age of the attempt so far
