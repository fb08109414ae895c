"""pgq.fail_job: running -> retrying (backoff) or dead (dead letter queue), fenced."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest

import factories
from factories import insert_execution, insert_job, raises_sqlstate

pytestmark = pytest.mark.integration


def fail(
    conn: psycopg.Connection[Any],
    job_id: int,
    worker_id: uuid.UUID,
    attempt: int,
    *,
    error_type: str = "SMTPError",
    message: str = "timed out",
    traceback: str | None = "Traceback (most recent call last): ...",
    retry_delay: float | None = None,
    fatal: bool = False,
    outcome: str = "failed",
    p_now: dt.datetime | None = None,
) -> bool:
    row = conn.execute(
        "SELECT pgq.fail_job(%s, %s, %s, %s, %s, %s, %s, %s, %s::pgq.attempt_outcome,"
        " coalesce(%s::timestamptz, now()))",
        (job_id, worker_id, attempt, error_type, message, traceback, retry_delay, fatal, outcome, p_now),
    ).fetchone()
    assert row is not None
    return bool(row[0])


def expected_backoff(attempt: int, base: float = 1.0, factor: float = 2.0, cap: float = 300.0) -> float:
    """SPEC §4: min(base * factor^(n-1), max), before jitter."""
    return min(base * factor ** (attempt - 1), cap)


@pytest.mark.parametrize("attempt", [1, 4])
def test_failed_attempt_with_attempts_left_is_retried_after_the_default_backoff(conn, worker_id, now, attempt):
    job_id = insert_job(conn, status="running", worker_id=worker_id, attempts=attempt, max_attempts=5)

    assert fail(conn, job_id, worker_id, attempt, p_now=now) is True

    row = factories.job(conn, job_id)
    assert row["status"] == "retrying"
    assert row["last_error"] == "SMTPError: timed out"
    assert row["attempts"] == attempt
    assert row["finished_at"] is None
    assert row["updated_at"] == now
    delay = (row["run_at"] - now).total_seconds()
    base = expected_backoff(attempt)
    assert base * 0.9 - 1e-6 <= delay <= base * 1.1 + 1e-6  # default jitter 0.1
    [execution] = factories.executions(conn, job_id)
    assert (execution["attempt"], execution["outcome"], execution["worker_id"]) == (attempt, "failed", worker_id)
    assert (execution["error_type"], execution["error_message"]) == ("SMTPError", "timed out")
    assert execution["traceback"] == "Traceback (most recent call last): ..."
    assert execution["finished_at"] == now
    assert factories.dead_letters(conn, job_id) == []


def test_backoff_uses_the_jobs_own_retry_policy(conn, worker_id, now):
    job_id = insert_job(conn, status="running", worker_id=worker_id, attempts=3, max_attempts=10,
                        retry_base_seconds=5.0, retry_factor=3.0, retry_max_seconds=30.0, retry_jitter=0.0)
    assert fail(conn, job_id, worker_id, 3, p_now=now)
    # 5 * 3^2 = 45, capped at 30; no jitter, so exact.
    assert factories.job(conn, job_id)["run_at"] - now == dt.timedelta(seconds=expected_backoff(3, 5, 3, 30))


def test_jitter_spreads_retry_times(conn, worker_id, now):
    job_ids = [insert_job(conn, status="running", worker_id=worker_id, max_attempts=3,
                          retry_base_seconds=100.0, retry_jitter=0.5) for _ in range(20)]
    for job_id in job_ids:
        assert fail(conn, job_id, worker_id, 1, p_now=now)

    delays = {(factories.job(conn, i)["run_at"] - now).total_seconds() for i in job_ids}
    assert all(50 - 1e-6 <= d <= 150 + 1e-6 for d in delays)
    assert len(delays) > 1


def test_explicit_retry_delay_overrides_the_backoff(conn, worker_id, now):
    job_id = insert_job(conn, status="running", worker_id=worker_id)

    assert fail(conn, job_id, worker_id, 1, retry_delay=42.5, p_now=now)

    assert factories.job(conn, job_id)["run_at"] == now + dt.timedelta(seconds=42.5)


def test_immediate_retry_wakes_workers_and_delayed_retry_does_not(conn, worker_id, now, drain_notifications):
    soon = insert_job(conn, status="running", worker_id=worker_id, queue="soon")
    later = insert_job(conn, status="running", worker_id=worker_id, queue="later")
    drain_notifications()

    assert fail(conn, soon, worker_id, 1, retry_delay=0, p_now=now)
    assert fail(conn, later, worker_id, 1, retry_delay=60, p_now=now)

    assert drain_notifications() == [("pgq_job_available", "soon")]


def test_last_attempt_failing_moves_the_job_to_the_dead_letter_queue_with_its_history(conn, worker_id, now):
    job_id = insert_job(conn, status="running", worker_id=worker_id, attempts=3, max_attempts=3, queue="emails",
                        task="send_email")
    earlier = now - dt.timedelta(minutes=5)
    insert_execution(conn, job_id, attempt=1, outcome="failed", error_type="SMTPError", error_message="refused",
                     started_at=earlier, finished_at=earlier)
    insert_execution(conn, job_id, attempt=2, outcome="lost", error_type="WorkerLost", error_message="gone",
                     started_at=earlier, finished_at=earlier)

    assert fail(conn, job_id, worker_id, 3, error_type="SMTPError", message="timed out", p_now=now)

    row = factories.job(conn, job_id)
    assert row["status"] == "dead"
    assert row["finished_at"] == now
    assert row["last_error"] == "SMTPError: timed out"
    [letter] = factories.dead_letters(conn, job_id)
    assert (letter["queue"], letter["task"], letter["reason"]) == ("emails", "send_email", "exhausted")
    assert letter["last_error"] == "SMTPError: timed out"
    assert letter["moved_at"] == now
    assert letter["requeued_at"] is None
    history = [(h["attempt"], h["outcome"], h["error_type"], h["error_message"]) for h in letter["error_history"]]
    assert history == [(1, "failed", "SMTPError", "refused"), (2, "lost", "WorkerLost", "gone"),
                       (3, "failed", "SMTPError", "timed out")]
    assert letter["error_history"][2]["worker_id"] == str(worker_id)


def test_fatal_failure_is_dead_at_once_even_with_attempts_left(conn, worker_id, now):
    job_id = insert_job(conn, status="running", worker_id=worker_id, attempts=1, max_attempts=5)

    assert fail(conn, job_id, worker_id, 1, fatal=True, p_now=now)

    assert factories.job(conn, job_id)["status"] == "dead"
    [letter] = factories.dead_letters(conn, job_id)
    assert letter["reason"] == "fatal"
    assert [h["attempt"] for h in letter["error_history"]] == [1]


def test_timed_out_outcome_is_recorded(conn, worker_id, now):
    job_id = insert_job(conn, status="running", worker_id=worker_id)

    assert fail(conn, job_id, worker_id, 1, error_type="JobTimeout", message="ran 30 s", outcome="timed_out",
                p_now=now)

    assert [e["outcome"] for e in factories.executions(conn, job_id)] == ["timed_out"]
    assert factories.job(conn, job_id)["status"] == "retrying"


def test_changes_nothing_when_the_job_is_not_running(conn, worker_id):
    for status in ("queued", "retrying", "waiting", "completed", "dead", "cancelled"):
        job_id = insert_job(conn, status=status, worker_id=worker_id, attempts=1)
        before = factories.snapshot(conn)

        assert fail(conn, job_id, worker_id, 1) is False, status
        assert fail(conn, job_id, worker_id, 1, fatal=True) is False, status
        assert factories.snapshot(conn) == before, status


def test_changes_nothing_when_another_worker_owns_the_job(conn, worker_id, other_worker_id):
    job_id = insert_job(conn, status="running", worker_id=other_worker_id)
    before = factories.snapshot(conn)

    assert fail(conn, job_id, worker_id, 1) is False
    assert fail(conn, job_id, worker_id, 1, fatal=True) is False
    assert factories.snapshot(conn) == before


def test_changes_nothing_when_the_report_is_for_another_attempt(conn, worker_id):
    job_id = insert_job(conn, status="running", worker_id=worker_id, attempts=2)
    before = factories.snapshot(conn)

    for reported_attempt in (1, 3):
        assert fail(conn, job_id, worker_id, reported_attempt) is False
        assert factories.snapshot(conn) == before


def test_changes_nothing_for_an_unknown_job(conn, worker_id):
    before = factories.snapshot(conn)

    assert fail(conn, 10_000_001, worker_id, 1) is False
    assert factories.snapshot(conn) == before


def test_outcomes_other_than_failed_or_timed_out_are_rejected(conn, worker_id):
    job_id = insert_job(conn, status="running", worker_id=worker_id)
    before = factories.snapshot(conn)

    for outcome in ("completed", "lost", "cancelled", "interrupted"):
        with raises_sqlstate("PQ004", match=outcome):
            fail(conn, job_id, worker_id, 1, outcome=outcome)
    assert factories.snapshot(conn) == before


def test_negative_retry_delay_is_rejected(conn, worker_id):
    job_id = insert_job(conn, status="running", worker_id=worker_id)
    before = factories.snapshot(conn)

    with raises_sqlstate("PQ004"):
        fail(conn, job_id, worker_id, 1, retry_delay=-1)
    assert factories.snapshot(conn) == before
