"""pgq.cancel_job: waiting | queued | retrying | running -> cancelled."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest

import factories
from factories import insert_job, raises_sqlstate

pytestmark = pytest.mark.integration


def cancel(conn: psycopg.Connection[Any], job_id: int, p_now: dt.datetime | None = None) -> bool:
    row = conn.execute("SELECT pgq.cancel_job(%s, coalesce(%s::timestamptz, now()))", (job_id, p_now)).fetchone()
    assert row is not None
    return bool(row[0])


@pytest.mark.parametrize("status", ["waiting", "queued", "retrying"])
def test_cancels_a_job_that_is_not_running(conn, now, status, drain_notifications):
    job_id = insert_job(conn, status=status)
    drain_notifications()

    assert cancel(conn, job_id, now) is True

    row = factories.job(conn, job_id)
    assert (row["status"], row["finished_at"], row["updated_at"]) == ("cancelled", now, now)
    assert factories.executions(conn, job_id) == []
    assert drain_notifications() == []


def test_cancelling_a_running_job_records_the_attempt_and_tells_its_worker(conn, worker_id, now,
                                                                          drain_notifications):
    started = now - dt.timedelta(seconds=3)
    job_id = insert_job(conn, status="running", worker_id=worker_id, attempts=2, started_at=started)
    drain_notifications()

    assert cancel(conn, job_id, now) is True

    assert factories.job(conn, job_id)["status"] == "cancelled"
    [execution] = factories.executions(conn, job_id)
    assert (execution["attempt"], execution["outcome"], execution["worker_id"]) == (2, "cancelled", worker_id)
    assert (execution["started_at"], execution["finished_at"]) == (started, now)
    assert drain_notifications() == [("pgq_job_cancelled", str(job_id))]


def test_the_worker_of_a_cancelled_job_cannot_complete_it(conn, worker_id):
    job_id = insert_job(conn, status="running", worker_id=worker_id)
    cancel(conn, job_id)

    done = conn.execute("SELECT * FROM pgq.complete_jobs(%s, %s, '{1}')", (worker_id, [job_id])).fetchall()
    failed = conn.execute("SELECT pgq.fail_job(%s, %s, 1, 'E', 'm')", (job_id, worker_id)).fetchone()

    assert done == []
    assert failed == (False,)
    assert factories.job(conn, job_id)["status"] == "cancelled"


def test_cancelling_twice_returns_false_and_changes_nothing(conn, now):
    job_id = insert_job(conn)
    assert cancel(conn, job_id, now) is True
    before = factories.snapshot(conn)

    assert cancel(conn, job_id, now + dt.timedelta(minutes=1)) is False
    assert factories.snapshot(conn) == before


def test_finished_jobs_cannot_be_cancelled(conn):
    for status in ("completed", "dead"):
        job_id = insert_job(conn, status=status)
        before = factories.snapshot(conn)

        with raises_sqlstate("PQ002", match=status):
            cancel(conn, job_id)
        assert factories.snapshot(conn) == before, status


def test_unknown_job_is_reported(conn):
    with raises_sqlstate("PQ001"):
        cancel(conn, 10_000_001)
