"""pgq.mark_stale_workers: silent workers become stale and their running jobs are rescued."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest

import factories
from factories import insert_execution, insert_job, insert_worker, raises_sqlstate

pytestmark = pytest.mark.integration

TIMEOUT = dt.timedelta(seconds=90)


def sweep(conn: psycopg.Connection[Any], p_now: dt.datetime, timeout: dt.timedelta = TIMEOUT) -> list[tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT worker_id, job_id, job_status::text FROM pgq.mark_stale_workers(%s, %s)", (timeout, p_now)
    ).fetchall()
    return sorted(rows, key=lambda r: (str(r[0]), r[1] or 0))


def test_worker_with_an_old_heartbeat_is_marked_stale_and_its_jobs_run_again_at_once(conn, now):
    last_beat = now - dt.timedelta(minutes=5)
    stale = insert_worker(conn, last_heartbeat=last_beat, current_load=2)
    started = now - dt.timedelta(minutes=6)
    jobs = [insert_job(conn, status="running", worker_id=stale, started_at=started, attempts=1) for _ in range(2)]

    rows = sweep(conn, now)

    assert rows == sorted([(stale, jobs[0], "retrying"), (stale, jobs[1], "retrying")], key=lambda r: r[1])
    w = factories.worker(conn, stale)
    assert (w["status"], w["stopped_at"], w["current_load"], w["updated_at"]) == ("stale", now, 0, now)
    for job_id in jobs:
        row = factories.job(conn, job_id)
        assert row["status"] == "retrying"
        assert row["run_at"] == now  # runnable at once, no backoff
        assert row["last_error"].startswith("WorkerLost: ")
        [execution] = factories.executions(conn, job_id)
        assert (execution["attempt"], execution["outcome"], execution["worker_id"]) == (1, "lost", stale)
        assert (execution["started_at"], execution["finished_at"]) == (started, now)
        assert execution["error_type"] == "WorkerLost"
    # Another worker can claim them right away, as attempt 2.
    rescuer = insert_worker(conn)
    claimed = conn.execute("SELECT id, attempts FROM pgq.get_runnable_jobs('{default}', %s, 10, %s)",
                           (rescuer, now)).fetchall()
    assert sorted(claimed) == [(jobs[0], 2), (jobs[1], 2)]


def test_rescue_wakes_the_queues_of_the_rescued_jobs(conn, now, drain_notifications):
    stale = insert_worker(conn, last_heartbeat=now - dt.timedelta(minutes=5))
    insert_job(conn, status="running", worker_id=stale, queue="emails")
    insert_job(conn, status="running", worker_id=stale, queue="emails")
    drain_notifications()

    sweep(conn, now)

    assert drain_notifications() == [("pgq_job_available", "emails")]


def test_worker_with_a_recent_heartbeat_is_left_alone(conn, now):
    fresh = insert_worker(conn, last_heartbeat=now - TIMEOUT)  # exactly at the limit: not yet stale
    insert_job(conn, status="running", worker_id=fresh)
    before = factories.snapshot(conn)

    assert sweep(conn, now) == []
    assert factories.snapshot(conn) == before


def test_stale_worker_without_jobs_is_reported_with_no_job(conn, now):
    stale = insert_worker(conn, last_heartbeat=now - TIMEOUT - dt.timedelta(microseconds=1))

    assert sweep(conn, now) == [(stale, None, None)]
    assert factories.worker(conn, stale)["status"] == "stale"


def test_draining_worker_that_stops_beating_is_stale_too(conn, now):
    draining = insert_worker(conn, status="draining", last_heartbeat=now - dt.timedelta(minutes=5))

    assert sweep(conn, now) == [(draining, None, None)]
    assert factories.worker(conn, draining)["status"] == "stale"


def test_job_out_of_attempts_goes_to_the_dead_letter_queue_with_its_error_history(conn, now):
    stale = insert_worker(conn, last_heartbeat=now - dt.timedelta(minutes=5))
    job_id = insert_job(conn, status="running", worker_id=stale, attempts=2, max_attempts=2)
    insert_execution(conn, job_id, attempt=1, outcome="failed", error_type="ValueError", error_message="bad",
                     started_at=now - dt.timedelta(minutes=20), finished_at=now - dt.timedelta(minutes=19))

    assert sweep(conn, now) == [(stale, job_id, "dead")]

    row = factories.job(conn, job_id)
    assert (row["status"], row["finished_at"]) == ("dead", now)
    [letter] = factories.dead_letters(conn, job_id)
    assert letter["reason"] == "exhausted"
    assert letter["last_error"].startswith("WorkerLost: ")
    history = [(h["attempt"], h["outcome"], h["error_type"]) for h in letter["error_history"]]
    assert history == [(1, "failed", "ValueError"), (2, "lost", "WorkerLost")]


def test_only_running_jobs_of_the_stale_worker_are_rescued(conn, now):
    stale = insert_worker(conn, last_heartbeat=now - dt.timedelta(minutes=5))
    alive = insert_worker(conn, last_heartbeat=now)
    rescued = insert_job(conn, status="running", worker_id=stale)
    other = insert_job(conn, status="running", worker_id=alive)
    finished = insert_job(conn, status="completed", worker_id=stale)
    retrying = insert_job(conn, status="retrying", worker_id=stale)

    assert sweep(conn, now) == [(stale, rescued, "retrying")]
    assert factories.statuses(conn, [other, finished, retrying]) == {
        other: "running", finished: "completed", retrying: "retrying"}


def test_running_jobs_of_stopped_or_unregistered_workers_are_rescued(conn, now):
    stopped = insert_worker(conn, status="stopped", last_heartbeat=now - dt.timedelta(hours=1))
    on_stopped = insert_job(conn, status="running", worker_id=stopped)
    ghost = insert_worker(conn)
    on_ghost = insert_job(conn, status="running", worker_id=ghost)
    conn.execute("DELETE FROM pgq.workers WHERE id = %s", (ghost,))

    assert sweep(conn, now) == sorted([(stopped, on_stopped, "retrying"), (ghost, on_ghost, "retrying")],
                                      key=lambda r: str(r[0]))
    [execution] = factories.executions(conn, on_ghost)
    assert "not registered" in execution["error_message"]


def test_an_already_stale_worker_is_not_marked_again_but_late_jobs_are_rescued(conn, now):
    earlier = now - dt.timedelta(minutes=1)
    stale = insert_worker(conn, status="stale", last_heartbeat=now - dt.timedelta(minutes=10), stopped_at=earlier)
    job_id = insert_job(conn, status="running", worker_id=stale)

    assert sweep(conn, now) == [(stale, job_id, "retrying")]
    assert factories.worker(conn, stale)["stopped_at"] == earlier


def test_a_job_locked_by_its_worker_right_now_is_skipped_and_rescued_by_the_next_sweep(connect, conn, now):
    stale = insert_worker(conn, last_heartbeat=now - dt.timedelta(minutes=5))
    locked = insert_job(conn, status="running", worker_id=stale)
    free = insert_job(conn, status="running", worker_id=stale)
    finishing = connect(autocommit=False)
    finishing.execute("SELECT 1 FROM pgq.jobs WHERE id = %s FOR UPDATE", (locked,))

    assert sweep(conn, now) == [(stale, free, "retrying")]
    assert factories.job(conn, locked)["status"] == "running"

    finishing.rollback()
    assert sweep(conn, now + dt.timedelta(seconds=15)) == [(stale, locked, "retrying")]


def test_the_stale_worker_cannot_complete_a_rescued_job(conn, now):
    stale = insert_worker(conn, last_heartbeat=now - dt.timedelta(minutes=5))
    job_id = insert_job(conn, status="running", worker_id=stale)
    sweep(conn, now)
    before = factories.snapshot(conn)

    done = conn.execute("SELECT * FROM pgq.complete_jobs(%s, %s, '{1}')", (stale, [job_id])).fetchall()

    assert done == []
    assert factories.snapshot(conn) == before


def test_timeout_must_be_positive(conn, now):
    insert_worker(conn, last_heartbeat=now - dt.timedelta(days=1))
    before = factories.snapshot(conn)

    for timeout in (dt.timedelta(0), dt.timedelta(seconds=-1)):
        with raises_sqlstate("PQ004"):
            sweep(conn, now, timeout)
    assert factories.snapshot(conn) == before
