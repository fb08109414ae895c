"""pgq.complete_jobs: running -> completed for a batch, fenced by status, owner and attempt."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

import factories
from factories import insert_job, insert_worker, raises_sqlstate

pytestmark = pytest.mark.integration

NOT_RUNNING = ("queued", "retrying", "waiting", "completed", "dead", "cancelled")


def complete(
    conn: psycopg.Connection[Any],
    worker_id: uuid.UUID,
    job_ids: list[int],
    attempts: list[int],
    results: list[Any] | None = None,
    p_now: dt.datetime | None = None,
) -> set[int]:
    rows = conn.execute(
        "SELECT * FROM pgq.complete_jobs(%s, %s::bigint[], %s::int[], %s::jsonb[], coalesce(%s::timestamptz, now()))",
        (worker_id, job_ids, attempts, None if results is None else [Jsonb(r) for r in results], p_now),
    ).fetchall()
    assert len(rows) == len({r[0] for r in rows}), "an id was returned twice"
    return {int(r[0]) for r in rows}


def test_completes_a_running_job_and_records_the_attempt(conn, worker_id, now):
    started = now - dt.timedelta(seconds=2, milliseconds=250)
    job_id = insert_job(conn, status="running", worker_id=worker_id, attempts=2, started_at=started)
    finished = now

    assert complete(conn, worker_id, [job_id], [2], [{"sent": True}], p_now=finished) == {job_id}

    row = factories.job(conn, job_id)
    assert row["status"] == "completed"
    assert row["result"] == {"sent": True}
    assert row["finished_at"] == finished
    assert row["updated_at"] == finished
    assert row["worker_id"] == worker_id  # kept: who ran the last attempt
    [execution] = factories.executions(conn, job_id)
    assert execution["outcome"] == "completed"
    assert execution["attempt"] == 2
    assert execution["worker_id"] == worker_id
    assert (execution["started_at"], execution["finished_at"]) == (started, finished)
    assert execution["duration_ms"] == pytest.approx((finished - started).total_seconds() * 1000)
    assert execution["error_type"] is None


def test_completes_a_batch_and_returns_only_the_ids_it_changed(conn, worker_id, other_worker_id):
    mine = [insert_job(conn, status="running", worker_id=worker_id) for _ in range(3)]
    stolen = insert_job(conn, status="running", worker_id=other_worker_id)
    results = [{"n": i} for i in range(4)]

    done = complete(conn, worker_id, [*mine, stolen], [1, 1, 1, 1], results)

    assert done == set(mine)
    assert factories.statuses(conn, [*mine, stolen]) == {**{i: "completed" for i in mine}, stolen: "running"}
    assert [factories.job(conn, i)["result"] for i in mine] == results[:3]


def test_results_may_be_omitted(conn, worker_id):
    job_id = insert_job(conn, status="running", worker_id=worker_id)

    assert complete(conn, worker_id, [job_id], [1], None) == {job_id}
    assert factories.job(conn, job_id)["result"] is None


def test_changes_nothing_when_the_job_is_not_running(conn, worker_id):
    # One database for all the statuses: each call is checked against a fresh snapshot.
    for status in NOT_RUNNING:
        job_id = insert_job(conn, status=status, worker_id=worker_id, attempts=1)
        before = factories.snapshot(conn)

        assert complete(conn, worker_id, [job_id], [1], [{"late": True}]) == set(), status
        assert factories.snapshot(conn) == before, status


def test_changes_nothing_when_another_worker_owns_the_job(conn, worker_id, other_worker_id):
    job_id = insert_job(conn, status="running", worker_id=other_worker_id)
    before = factories.snapshot(conn)

    assert complete(conn, worker_id, [job_id], [1], [{"late": True}]) == set()
    assert factories.snapshot(conn) == before


def test_changes_nothing_when_the_report_is_for_another_attempt(conn, worker_id):
    job_id = insert_job(conn, status="running", worker_id=worker_id, attempts=2)
    before = factories.snapshot(conn)

    for reported_attempt in (1, 3):
        assert complete(conn, worker_id, [job_id], [reported_attempt], [{"late": True}]) == set()
        assert factories.snapshot(conn) == before


def test_changes_nothing_for_an_unknown_job(conn, worker_id):
    before = factories.snapshot(conn)

    assert complete(conn, worker_id, [10_000_001], [1]) == set()
    assert factories.snapshot(conn) == before


def test_a_second_completion_is_rejected(conn, worker_id):
    job_id = insert_job(conn, status="running", worker_id=worker_id)
    assert complete(conn, worker_id, [job_id], [1], [{"first": True}]) == {job_id}
    before = factories.snapshot(conn)

    assert complete(conn, worker_id, [job_id], [1], [{"second": True}]) == set()
    assert factories.snapshot(conn) == before
    assert factories.job(conn, job_id)["result"] == {"first": True}


def test_late_report_from_a_rescued_attempt_cannot_overwrite_the_new_attempt(conn, now):
    # Worker A claims the job, goes silent, is marked stale; worker B claims the
    # job again. A's late completion must be rejected; B's is accepted.
    job_id = insert_job(conn, run_at=now - dt.timedelta(minutes=10))
    a = insert_worker(conn, last_heartbeat=now - dt.timedelta(minutes=10))
    conn.execute("SELECT pgq.get_runnable_jobs('{default}', %s, 1, %s)", (a, now - dt.timedelta(minutes=10)))
    conn.execute("SELECT pgq.mark_stale_workers(interval '90 seconds', %s)", (now,))
    b = insert_worker(conn)
    conn.execute("SELECT pgq.get_runnable_jobs('{default}', %s, 1, %s)", (b, now))
    assert factories.job(conn, job_id)["attempts"] == 2

    assert complete(conn, a, [job_id], [1], [{"from": "a"}]) == set()
    assert factories.job(conn, job_id)["status"] == "running"
    assert complete(conn, b, [job_id], [2], [{"from": "b"}]) == {job_id}
    assert factories.job(conn, job_id)["result"] == {"from": "b"}
    outcomes = [(e["attempt"], e["worker_id"], e["outcome"]) for e in factories.executions(conn, job_id)]
    assert outcomes == [(1, a, "lost"), (2, b, "completed")]


def test_arrays_of_different_lengths_are_rejected(conn, worker_id):
    for ids, attempts, results in [([1, 2], [1], None), ([1], [1, 1], None), ([1, 2], [1, 1], [{}])]:
        with raises_sqlstate("PQ004"):
            complete(conn, worker_id, ids, attempts, results)
