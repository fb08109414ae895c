"""pgq.release_jobs: running -> queued for claimed jobs a worker never started (undo the claim)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest

import factories
from factories import insert_job, raises_sqlstate

pytestmark = pytest.mark.integration


def release(conn: psycopg.Connection[Any], worker_id: uuid.UUID, job_ids: list[int], attempts: list[int],
            p_now: dt.datetime | None = None) -> set[int]:
    rows = conn.execute(
        "SELECT * FROM pgq.release_jobs(%s, %s::bigint[], %s::int[], coalesce(%s::timestamptz, now()))",
        (worker_id, job_ids, attempts, p_now),
    ).fetchall()
    return {int(r[0]) for r in rows}


def test_release_undoes_the_claim(conn, worker_id, now, drain_notifications):
    first = insert_job(conn, status="running", worker_id=worker_id, attempts=1, queue="a")
    second = insert_job(conn, status="running", worker_id=worker_id, attempts=2, queue="b")
    drain_notifications()

    assert release(conn, worker_id, [first, second], [1, 2], now) == {first, second}

    for job_id, attempts in ((first, 0), (second, 1)):
        row = factories.job(conn, job_id)
        assert (row["status"], row["attempts"], row["run_at"], row["updated_at"]) == ("queued", attempts, now, now)
        assert (row["worker_id"], row["started_at"]) == (None, None)
        assert factories.executions(conn, job_id) == []  # the attempt never happened
    assert sorted(drain_notifications()) == [("pgq_job_available", "a"), ("pgq_job_available", "b")]


def test_released_job_is_claimable_again_with_the_same_attempt_number(conn, worker_id, other_worker_id, now):
    job_id = insert_job(conn, run_at=now - dt.timedelta(minutes=1))
    conn.execute("SELECT pgq.get_runnable_jobs('{default}', %s, 1, %s)", (worker_id, now))
    release(conn, worker_id, [job_id], [1], now)

    row = conn.execute("SELECT id, attempts, worker_id FROM pgq.get_runnable_jobs('{default}', %s, 1, %s)",
                       (other_worker_id, now)).fetchone()

    assert row == (job_id, 1, other_worker_id)


def test_release_returns_only_the_ids_it_changed(conn, worker_id, other_worker_id, now):
    mine = insert_job(conn, status="running", worker_id=worker_id)
    theirs = insert_job(conn, status="running", worker_id=other_worker_id)

    assert release(conn, worker_id, [mine, theirs], [1, 1], now) == {mine}
    assert factories.job(conn, theirs)["status"] == "running"


def test_changes_nothing_when_the_job_is_not_running(conn, worker_id, drain_notifications):
    for status in ("queued", "retrying", "waiting", "completed", "dead", "cancelled"):
        job_id = insert_job(conn, status=status, worker_id=worker_id, attempts=1)
        before = factories.snapshot(conn)
        drain_notifications()

        assert release(conn, worker_id, [job_id], [1]) == set(), status
        assert factories.snapshot(conn) == before, status
        assert drain_notifications() == [], status


def test_changes_nothing_when_another_worker_owns_the_job(conn, worker_id, other_worker_id):
    job_id = insert_job(conn, status="running", worker_id=other_worker_id)
    before = factories.snapshot(conn)

    assert release(conn, worker_id, [job_id], [1]) == set()
    assert factories.snapshot(conn) == before


def test_changes_nothing_when_the_release_is_for_another_attempt(conn, worker_id):
    job_id = insert_job(conn, status="running", worker_id=worker_id, attempts=2)
    before = factories.snapshot(conn)

    for reported_attempt in (1, 3):
        assert release(conn, worker_id, [job_id], [reported_attempt]) == set()
        assert factories.snapshot(conn) == before


def test_arrays_of_different_lengths_are_rejected(conn, worker_id):
    with raises_sqlstate("PQ004"):
        release(conn, worker_id, [1, 2], [1])
