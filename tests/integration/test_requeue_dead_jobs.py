"""pgq.requeue_dead_jobs: dead -> queued, in a new life (attempts from 1 again, no last error),
with the dead letter closed."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest

import factories
from factories import insert_dead_letter, insert_job, raises_sqlstate

pytestmark = pytest.mark.integration


def requeue(
    conn: psycopg.Connection[Any], job_ids: list[int] | None = None, queue: str | None = None,
    p_now: dt.datetime | None = None,
) -> list[int]:
    rows = conn.execute(
        "SELECT * FROM pgq.requeue_dead_jobs(%s::bigint[], %s, coalesce(%s::timestamptz, now()))",
        (job_ids, queue, p_now),
    ).fetchall()
    return sorted(int(r[0]) for r in rows)


def dead_job(conn: psycopg.Connection[Any], queue: str = "default", **kwargs: Any) -> int:
    job_id = insert_job(conn, status="dead", queue=queue, last_error="Boom: it broke", **kwargs)
    insert_dead_letter(conn, job_id)
    return job_id


def test_requeues_the_named_dead_jobs(conn, now, drain_notifications):
    first, second, untouched = dead_job(conn, "emails"), dead_job(conn, "emails"), dead_job(conn, "emails")
    drain_notifications()

    assert requeue(conn, [first, second], p_now=now) == [first, second]

    for job_id in (first, second):
        row = factories.job(conn, job_id)
        assert (row["status"], row["attempts"], row["run_at"], row["finished_at"]) == ("queued", 0, now, None)
        # A new life: the previous life's error stays in the dead letter, not on the job.
        assert (row["life"], row["last_error"], row["worker_id"], row["started_at"]) == (2, None, None, None)
        [letter] = factories.dead_letters(conn, job_id)
        assert letter["requeued_at"] == now
    assert factories.job(conn, untouched)["status"] == "dead"
    assert factories.dead_letters(conn, untouched)[0]["requeued_at"] is None
    # One transaction, one queue: one wake-up.
    assert drain_notifications() == [("pgq_job_available", "emails")]


def test_without_ids_requeues_every_dead_job_of_the_queue_or_of_all_queues(conn):
    a1, a2, b1 = dead_job(conn, "a"), dead_job(conn, "a"), dead_job(conn, "b")
    queued = insert_job(conn, queue="a")

    assert requeue(conn, None, "a") == [a1, a2]
    assert factories.job(conn, b1)["status"] == "dead"
    assert requeue(conn, None, None) == [b1]
    assert requeue(conn, None, None) == []
    assert factories.job(conn, queued)["attempts"] == 0


def test_unknown_id_raises_and_requeues_nothing(conn):
    dead = dead_job(conn)
    before = factories.snapshot(conn)

    with raises_sqlstate("PQ001", match="10000001"):
        requeue(conn, [dead, 10_000_001])
    assert factories.snapshot(conn) == before


def test_id_of_a_job_that_is_not_dead_raises_and_requeues_nothing(conn):
    dead = dead_job(conn)
    for status in ("queued", "running", "completed", "cancelled"):
        alive = insert_job(conn, status=status)
        before = factories.snapshot(conn)

        with raises_sqlstate("PQ002", match="not dead"):
            requeue(conn, [dead, alive])
        assert factories.snapshot(conn) == before, status


def claim_one(conn: psycopg.Connection[Any], worker_id: uuid.UUID) -> tuple[int, int]:
    row = conn.execute("SELECT id, attempts FROM pgq.get_runnable_jobs('{default}', %s, 1)", (worker_id,)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_a_requeued_job_runs_again_and_can_complete(conn, worker_id):
    job_id = insert_job(conn, max_attempts=1)
    assert claim_one(conn, worker_id) == (job_id, 1)
    assert conn.execute("SELECT pgq.fail_job(%s, %s, 1, 'E', 'first life')", (job_id, worker_id)).fetchone() == (True,)
    assert factories.job(conn, job_id)["status"] == "dead"

    assert requeue(conn, [job_id]) == [job_id]
    assert claim_one(conn, worker_id) == (job_id, 1)
    done = conn.execute("SELECT * FROM pgq.complete_jobs(%s, %s, '{1}')", (worker_id, [job_id])).fetchall()

    assert done == [(job_id,)]
    assert factories.job(conn, job_id)["status"] == "completed"
    # Each attempt says which life it belongs to: the two runs no longer share "attempt 1".
    outcomes = [(e["life"], e["attempt"], e["outcome"]) for e in factories.executions(conn, job_id)]
    assert outcomes == [(1, 1, "failed"), (2, 1, "completed")]


def test_a_requeued_job_that_dies_again_gets_a_new_dead_letter_with_its_whole_history(conn, worker_id):
    job_id = insert_job(conn, max_attempts=1)
    claim_one(conn, worker_id)
    conn.execute("SELECT pgq.fail_job(%s, %s, 1, 'E', 'first life')", (job_id, worker_id))
    requeue(conn, [job_id])
    claim_one(conn, worker_id)

    assert conn.execute("SELECT pgq.fail_job(%s, %s, 1, 'E', 'second life')", (job_id, worker_id)).fetchone() == (
        True,)

    assert factories.job(conn, job_id)["status"] == "dead"
    first, second = factories.dead_letters(conn, job_id)
    assert first["requeued_at"] is not None
    assert second["requeued_at"] is None
    assert [h["error_message"] for h in second["error_history"]] == ["first life", "second life"]


def test_bulk_requeue_leaves_dead_a_job_whose_unique_key_is_taken(conn) -> None:
    """A bulk requeue must not fail because one dead job's key is held by a live job."""
    worker = "33333333-3333-3333-3333-333333333333"
    conn.execute("SELECT pgq.register_worker(%s, 'h', 1, '{u}', 2)", (worker,))
    keyed = conn.execute("SELECT pgq.enqueue_job('t', p_queue => 'u', p_max_attempts => 1, p_unique_key => 'k')").fetchone()[0]
    plain = conn.execute("SELECT pgq.enqueue_job('t', p_queue => 'u', p_max_attempts => 1)").fetchone()[0]
    conn.execute("SELECT * FROM pgq.get_runnable_jobs('{u}', %s, 2)", (worker,))
    for job_id in (keyed, plain):
        assert conn.execute("SELECT pgq.fail_job(%s, %s, 1, 'E', 'x')", (job_id, worker)).fetchone()[0]
    holder = conn.execute("SELECT pgq.enqueue_job('t', p_queue => 'u', p_unique_key => 'k')").fetchone()[0]
    assert holder not in (keyed, plain)

    requeued = [r[0] for r in conn.execute("SELECT * FROM pgq.requeue_dead_jobs()").fetchall()]

    assert requeued == [plain]
    statuses = dict(conn.execute("SELECT id, status::text FROM pgq.jobs").fetchall())
    assert statuses == {keyed: "dead", plain: "queued", holder: "queued"}


def test_a_requeued_job_shows_each_life_in_its_history_and_not_the_old_error(conn, worker_id):
    """Issue 9 (defect 8): after a requeue the attempts of two runs were both numbered from 1, with
    nothing to tell them apart, and the job kept the previous run's last_error."""
    job_id = insert_job(conn, max_attempts=2)
    for attempt in (1, 2):
        assert claim_one(conn, worker_id) == (job_id, attempt)
        conn.execute("SELECT pgq.fail_job(%s, %s, %s, 'E', %s, p_retry_delay => 0)",
                     (job_id, worker_id, attempt, f"life 1 attempt {attempt}"))
    assert factories.job(conn, job_id)["last_error"] == "E: life 1 attempt 2"

    requeue(conn, [job_id])
    requeued = factories.job(conn, job_id)
    assert (requeued["status"], requeued["life"], requeued["attempts"], requeued["last_error"]) == (
        "queued", 2, 0, None)

    assert claim_one(conn, worker_id) == (job_id, 1)
    running = conn.execute("SELECT life, attempt, outcome FROM pgq.job_history WHERE job_id = %s"
                           " ORDER BY life, attempt", (job_id,)).fetchall()
    assert running == [(1, 1, "failed"), (1, 2, "failed"), (2, 1, "running")]
    conn.execute("SELECT pgq.fail_job(%s, %s, 1, 'E', 'life 2 attempt 1', p_retry_delay => 0)", (job_id, worker_id))
    assert factories.job(conn, job_id)["last_error"] == "E: life 2 attempt 1"  # this life's error

    history = conn.execute("SELECT life, attempt, error_message FROM pgq.job_history WHERE job_id = %s"
                           " ORDER BY life, attempt", (job_id,)).fetchall()
    assert history == [(1, 1, "life 1 attempt 1"), (1, 2, "life 1 attempt 2"), (2, 1, "life 2 attempt 1")]


def test_a_second_dead_letter_lists_each_attempt_with_its_life(conn, worker_id):
    job_id = insert_job(conn, max_attempts=1)
    for life in (1, 2):
        claim_one(conn, worker_id)
        conn.execute("SELECT pgq.fail_job(%s, %s, 1, 'E', %s)", (job_id, worker_id, f"life {life}"))
        if life == 1:
            requeue(conn, [job_id])
    _, letter = factories.dead_letters(conn, job_id)
    assert [(h["life"], h["attempt"], h["error_message"]) for h in letter["error_history"]] == [
        (1, 1, "life 1"), (2, 1, "life 2")]


def test_cancelling_a_running_requeued_job_records_its_life(conn, worker_id):
    job_id = insert_job(conn, max_attempts=1)
    claim_one(conn, worker_id)
    conn.execute("SELECT pgq.fail_job(%s, %s, 1, 'E', 'x')", (job_id, worker_id))
    requeue(conn, [job_id])
    claim_one(conn, worker_id)
    assert conn.execute("SELECT pgq.cancel_job(%s)", (job_id,)).fetchone() == (True,)
    assert [(e["life"], e["attempt"], e["outcome"]) for e in factories.executions(conn, job_id)] == [
        (1, 1, "failed"), (2, 1, "cancelled")]

