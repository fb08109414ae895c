"""pgq.fail_timed_out_jobs: the safety net for attempts that outlive their timeout."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest

import factories
from factories import insert_job, raises_sqlstate

pytestmark = pytest.mark.integration

TIMEOUT = dt.timedelta(seconds=30)


def sweep(conn: psycopg.Connection[Any], p_now: dt.datetime, grace: dt.timedelta = dt.timedelta(0)) -> list[Any]:
    rows = conn.execute(
        "SELECT job_id, worker_id, job_status::text FROM pgq.fail_timed_out_jobs(%s, %s)", (grace, p_now)
    ).fetchall()
    return sorted(rows)


def test_attempt_past_its_timeout_is_failed_and_retried_with_backoff(conn, worker_id, now):
    started = now - TIMEOUT - dt.timedelta(seconds=1)
    job_id = insert_job(conn, status="running", worker_id=worker_id, timeout=TIMEOUT, started_at=started,
                        retry_base_seconds=10.0, retry_jitter=0.0)

    assert sweep(conn, now) == [(job_id, worker_id, "retrying")]

    row = factories.job(conn, job_id)
    assert row["status"] == "retrying"
    assert row["run_at"] == now + dt.timedelta(seconds=10)  # the job's backoff for attempt 1
    assert row["last_error"].startswith("JobTimeout: ")
    [execution] = factories.executions(conn, job_id)
    assert (execution["outcome"], execution["error_type"], execution["finished_at"]) == ("timed_out", "JobTimeout", now)
    # The stuck worker's late report is rejected.
    assert conn.execute("SELECT * FROM pgq.complete_jobs(%s, %s, '{1}')", (worker_id, [job_id])).fetchall() == []


def test_attempt_within_timeout_plus_grace_is_left_alone(conn, worker_id, now):
    grace = dt.timedelta(seconds=5)
    insert_job(conn, status="running", worker_id=worker_id, timeout=TIMEOUT, started_at=now - TIMEOUT - grace)
    insert_job(conn, status="running", worker_id=worker_id, timeout=TIMEOUT, started_at=now - TIMEOUT)
    before = factories.snapshot(conn)

    assert sweep(conn, now, grace) == []
    assert factories.snapshot(conn) == before


def test_grace_period_is_added_to_the_timeout(conn, worker_id, now):
    grace = dt.timedelta(seconds=5)
    job_id = insert_job(conn, status="running", worker_id=worker_id, timeout=TIMEOUT,
                        started_at=now - TIMEOUT - grace - dt.timedelta(milliseconds=1))

    assert sweep(conn, now, grace) == [(job_id, worker_id, "retrying")]


def test_jobs_without_timeout_or_not_running_are_never_failed(conn, worker_id, now):
    long_ago = now - dt.timedelta(days=1)
    insert_job(conn, status="running", worker_id=worker_id, started_at=long_ago)  # no timeout
    insert_job(conn, status="retrying", worker_id=worker_id, timeout=TIMEOUT, started_at=long_ago)
    insert_job(conn, status="completed", worker_id=worker_id, timeout=TIMEOUT, started_at=long_ago)
    before = factories.snapshot(conn)

    assert sweep(conn, now) == []
    assert factories.snapshot(conn) == before


def test_timed_out_last_attempt_goes_to_the_dead_letter_queue(conn, worker_id, now):
    job_id = insert_job(conn, status="running", worker_id=worker_id, timeout=TIMEOUT, attempts=3, max_attempts=3,
                        started_at=now - dt.timedelta(minutes=5))

    assert sweep(conn, now) == [(job_id, worker_id, "dead")]
    [letter] = factories.dead_letters(conn, job_id)
    assert letter["reason"] == "exhausted"
    assert [h["outcome"] for h in letter["error_history"]] == ["timed_out"]


def test_negative_grace_is_rejected(conn, now):
    with raises_sqlstate("PQ004"):
        sweep(conn, now, dt.timedelta(seconds=-1))
