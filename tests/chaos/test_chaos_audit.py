"""The chaos audit must be able to fail: each invariant it checks, broken on purpose
with hand-written rows, is reported; a correct history passes, and an execution
that went on after its attempt was taken from it counts as late, not as an overlap."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import factories
from chaos_audit import AuditReport, audit

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


@pytest.fixture
def db(chaos_db: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(chaos_db, autocommit=True) as conn:
        yield conn


def job(conn: psycopg.Connection[Any], n: int, *, status: str = "completed", attempts: int = 1,
        worker: uuid.UUID | None = None, kind: str = "ok", max_attempts: int = 10, result: Any = "auto") -> int:
    worker = worker or factories.insert_worker(conn, queues=["chaos"])
    if result == "auto":
        result = {"n": n, "attempt": attempts, "worker": str(worker)} if status == "completed" else None
    return int(factories.insert_job(conn, task="chaos.work", queue="chaos", payload={"n": n, "kind": kind, "ms": 0},
                                    status=status, attempts=attempts, max_attempts=max_attempts, worker_id=worker,
                                    result=result))


def attempt(conn: psycopg.Connection[Any], job_id: int, n: int, number: int, *, outcome: str, started: float,
            closed: float, ran_until: float | None, worker: uuid.UUID | None = None, returned: bool = True) -> None:
    """One attempt: the database's record (job_executions) and the handler's (chaos.runs)."""
    factories.insert_execution(conn, job_id, attempt=number, outcome=outcome, worker_id=worker,
                               started_at=at(started), finished_at=at(closed))
    conn.execute("INSERT INTO chaos.runs (job_id, n, attempt, worker_id, pid, claimed_at, started_at, ended_at,"
                 " outcome) VALUES (%s, %s, %s, %s, 1, %s, %s, %s, %s)",
                 (job_id, n, number, worker, at(started), at(started), None if ran_until is None else at(ran_until),
                  None if ran_until is None else ("returned" if returned else "raised")))


def completed_once(conn: psycopg.Connection[Any], n: int) -> int:
    w = factories.insert_worker(conn, queues=["chaos"])
    job_id = job(conn, n, worker=w)
    attempt(conn, job_id, n, 1, outcome="completed", started=0, closed=1.1, ran_until=1, worker=w)
    return job_id


def problems(report: AuditReport) -> str:
    return "\n".join(report.violations)


def test_a_correct_history_passes(db: psycopg.Connection[Any]) -> None:
    completed_once(db, 0)
    # Attempt 1 lost with its worker (killed: the handler never ended), attempt 2 completed.
    w1, w2 = factories.insert_worker(db, queues=["chaos"]), factories.insert_worker(db, queues=["chaos"])
    rescued = job(db, 1, attempts=2, worker=w2)
    attempt(db, rescued, 1, 1, outcome="lost", started=0, closed=5, ran_until=None, worker=w1)
    attempt(db, rescued, 1, 2, outcome="completed", started=6, closed=7, ran_until=6.5, worker=w2)
    report = audit(db, 2)
    assert report.violations == [], "\n".join(report.violations)
    assert (report.lost, report.duplicated, report.overlaps, report.late, report.rescued_attempts) == (0, 0, 0, 0, 1)


def test_a_stalled_handler_that_ran_on_after_its_rescue_is_late_not_an_overlap(db: psycopg.Connection[Any]) -> None:
    w1, w2 = factories.insert_worker(db, queues=["chaos"]), factories.insert_worker(db, queues=["chaos"])
    job_id = job(db, 0, attempts=2, worker=w2)
    # Attempt 1 was taken from w1 at t=2 (stale); its handler came back and returned at t=9.
    attempt(db, job_id, 0, 1, outcome="lost", started=0, closed=2, ran_until=9, worker=w1)
    attempt(db, job_id, 0, 2, outcome="completed", started=3, closed=4, ran_until=3.5, worker=w2)
    report = audit(db, 1)
    assert report.violations == [], "\n".join(report.violations)
    assert (report.overlaps, report.late, report.late_returned) == (0, 1, 1)


def test_two_live_holders_at_once_are_an_overlap(db: psycopg.Connection[Any]) -> None:
    w1, w2 = factories.insert_worker(db, queues=["chaos"]), factories.insert_worker(db, queues=["chaos"])
    job_id = job(db, 0, attempts=2, worker=w2)
    # Attempt 1 was closed (failed) at t=5 only, yet attempt 2 started at t=3.
    attempt(db, job_id, 0, 1, outcome="failed", started=0, closed=5, ran_until=4.9, worker=w1, returned=False)
    attempt(db, job_id, 0, 2, outcome="completed", started=3, closed=6, ran_until=5.5, worker=w2)
    report = audit(db, 1)
    assert report.overlaps == 1 and report.duplicated == 1
    assert "held it at the same time" in problems(report)


def test_a_missing_job_and_an_unfinished_one_are_lost(db: psycopg.Connection[Any]) -> None:
    completed_once(db, 0)
    job(db, 1, status="running")
    report = audit(db, 3)  # n=2 was never enqueued
    assert report.lost == 2
    assert "missing from pgq.jobs: (2,)" in problems(report)
    assert "not in a terminal status" in problems(report)


def test_a_second_completion_is_a_duplicate(db: psycopg.Connection[Any]) -> None:
    job_id = completed_once(db, 0)
    factories.insert_execution(db, job_id, attempt=1, outcome="completed", started_at=at(0), finished_at=at(2))
    report = audit(db, 1)
    assert report.duplicated >= 1
    assert "completed other than exactly once" in problems(report)


def test_a_result_from_another_attempt_is_reported(db: psycopg.Connection[Any]) -> None:
    w1, w2 = factories.insert_worker(db, queues=["chaos"]), factories.insert_worker(db, queues=["chaos"])
    # The late handler of attempt 1 overwrote the result of attempt 2.
    job_id = job(db, 0, attempts=2, worker=w2, result={"n": 0, "attempt": 1, "worker": str(w1)})
    attempt(db, job_id, 0, 1, outcome="lost", started=0, closed=2, ran_until=9, worker=w1)
    attempt(db, job_id, 0, 2, outcome="completed", started=3, closed=4, ran_until=3.5, worker=w2)
    assert "stored result is not the one of the attempt that completed" in problems(audit(db, 1))


def test_the_dead_letter_queue_must_hold_exactly_the_exhausted_jobs(db: psycopg.Connection[Any]) -> None:
    w = factories.insert_worker(db, queues=["chaos"])
    dead = job(db, 0, status="dead", attempts=3, max_attempts=3, kind="fail", worker=w)
    for number in (1, 2, 3):
        attempt(db, dead, 0, number, outcome="failed", started=number, closed=number + 0.5, ran_until=number + 0.4,
                worker=w, returned=False)
    assert "dead_letter_queue differs from the dead jobs" in problems(audit(db, 1))
    factories.insert_dead_letter(db, dead)
    assert audit(db, 1).violations == []
    # A dead job that had attempts left is not "exhausted".
    early = job(db, 1, status="dead", attempts=1, max_attempts=3, worker=w)
    attempt(db, early, 1, 1, outcome="failed", started=0, closed=1, ran_until=0.5, worker=w, returned=False)
    factories.insert_dead_letter(db, early)
    assert "had not used up their attempts" in problems(audit(db, 2))


def test_a_job_designed_to_fail_must_end_dead(db: psycopg.Connection[Any]) -> None:
    w = factories.insert_worker(db, queues=["chaos"])
    job_id = job(db, 0, kind="fail", worker=w)
    attempt(db, job_id, 0, 1, outcome="completed", started=0, closed=1, ran_until=0.5, worker=w)
    assert "designed to fail that are not dead" in problems(audit(db, 1))


def test_an_attempt_never_closed_or_run_twice_is_reported(db: psycopg.Connection[Any]) -> None:
    w = factories.insert_worker(db, queues=["chaos"])
    job_id = job(db, 0, attempts=2, worker=w)
    attempt(db, job_id, 0, 2, outcome="completed", started=3, closed=4, ran_until=3.5, worker=w)
    # Attempt 1 ran (twice!) but the database never closed it.
    for _ in range(2):
        db.execute("INSERT INTO chaos.runs (job_id, n, attempt, worker_id, pid, claimed_at, started_at, ended_at,"
                   " outcome) VALUES (%s, 0, 1, %s, 1, %s, %s, %s, 'returned')", (job_id, w, at(0), at(0), at(1)))
    text = problems(audit(db, 1))
    assert "claim(s) executed more than once" in text
    assert "a claim the database never closed" in text
    assert "were not each closed exactly once" in text


def test_an_attempt_charged_without_a_handler_start_is_reported_a_free_rescue_is_not(
        db: psycopg.Connection[Any]) -> None:
    w1, w2 = factories.insert_worker(db, queues=["chaos"]), factories.insert_worker(db, queues=["chaos"])
    # Job 0 was prefetched by w1, which was killed before starting it, and the rescue
    # charged the attempt: a lost attempt 1 that no handler ran.
    charged = job(db, 0, attempts=2, worker=w2)
    factories.insert_execution(db, charged, attempt=1, outcome="lost", worker_id=w1, started_at=at(0),
                               finished_at=at(2))
    attempt(db, charged, 0, 2, outcome="completed", started=3, closed=4, ran_until=3.5, worker=w2)
    # Job 1, the same story, but the rescue gave the claim back: no execution row, and
    # w2 ran it as attempt 1.
    refunded = job(db, 1, attempts=1, worker=w2)
    db.execute("UPDATE pgq.jobs SET free_rescues = 1 WHERE id = %s", (refunded,))
    attempt(db, refunded, 1, 1, outcome="completed", started=3, closed=4, ran_until=3.5, worker=w2)
    report = audit(db, 2)
    assert (report.charged_unstarted, report.free_rescues) == (1, 1)
    assert problems(report) == (f"1 attempt(s) charged although their handler never started (job, attempt, "
                                f"outcome, error): ({charged}, 1, 'lost', 'RuntimeError')")


def test_a_handler_start_in_the_journal_only_counts_as_a_start(db: psycopg.Connection[Any]) -> None:
    """Killed between its first act (the journal line) and its INSERT into chaos.runs:
    the handler started, so charging the attempt is right."""
    w1, w2 = factories.insert_worker(db, queues=["chaos"]), factories.insert_worker(db, queues=["chaos"])
    job_id = job(db, 0, attempts=2, worker=w2)
    factories.insert_execution(db, job_id, attempt=1, outcome="lost", worker_id=w1, started_at=at(0),
                               finished_at=at(2))
    attempt(db, job_id, 0, 2, outcome="completed", started=3, closed=4, ran_until=3.5, worker=w2)
    assert audit(db, 1).charged_unstarted == 1
    db.execute("INSERT INTO chaos.starts (job_id, attempt, worker_id, claimed_at) VALUES (%s, 1, %s, %s)",
               (job_id, w2, at(0)))
    assert audit(db, 1).charged_unstarted == 1  # a start of that attempt, on another worker
    db.execute("INSERT INTO chaos.starts (job_id, attempt, worker_id, claimed_at) VALUES (%s, 1, %s, %s)",
               (job_id, w1, at(0)))
    assert audit(db, 1).violations == []


def test_a_run_of_a_claim_given_back_is_closed_at_the_next_claim_within_the_free_rescues(
        db: psycopg.Connection[Any]) -> None:
    w1, w2 = factories.insert_worker(db, queues=["chaos"]), factories.insert_worker(db, queues=["chaos"])
    job_id = job(db, 0, attempts=1, worker=w2)
    # w1 started attempt 1 and died before reporting its watermark: the rescue gave the
    # attempt back (no execution row), and w2 claimed attempt 1 again at t=5.
    db.execute("INSERT INTO chaos.runs (job_id, n, attempt, worker_id, pid, claimed_at, started_at)"
               " VALUES (%s, 0, 1, %s, 1, %s, %s)", (job_id, w1, at(0), at(0)))
    attempt(db, job_id, 0, 1, outcome="completed", started=5, closed=6, ran_until=5.5, worker=w2)
    report = audit(db, 1)
    assert "a claim the database never closed" in problems(report)  # no free rescue recorded
    db.execute("UPDATE pgq.jobs SET free_rescues = 1 WHERE id = %s", (job_id,))
    report = audit(db, 1)
    assert report.violations == [], "\n".join(report.violations)
    assert (report.overlaps, report.late, report.charged_unstarted) == (0, 0, 0)
    # Its handler was still going after the next claim (a stalled worker): late, not an overlap.
    db.execute("UPDATE chaos.runs SET ended_at = %s, outcome = 'returned' WHERE worker_id = %s", (at(7), w1))
    report = audit(db, 1)
    assert report.violations == [], "\n".join(report.violations)
    assert (report.overlaps, report.late) == (0, 1)


def test_a_charge_without_a_start_is_allowed_once_the_free_rescues_are_used_up(db: psycopg.Connection[Any]) -> None:
    w1, w2 = factories.insert_worker(db, queues=["chaos"]), factories.insert_worker(db, queues=["chaos"])
    job_id = job(db, 0, attempts=2, max_attempts=3, worker=w2)
    factories.insert_execution(db, job_id, attempt=1, outcome="lost", worker_id=w1, started_at=at(0),
                               finished_at=at(2))
    attempt(db, job_id, 0, 2, outcome="completed", started=3, closed=4, ran_until=3.5, worker=w2)
    db.execute("UPDATE pgq.jobs SET free_rescues = 2 WHERE id = %s", (job_id,))
    assert audit(db, 1).charged_unstarted == 1
    db.execute("UPDATE pgq.jobs SET free_rescues = 3 WHERE id = %s", (job_id,))
    report = audit(db, 1)
    assert report.violations == [], "\n".join(report.violations)
    assert (report.charged_unstarted, report.charged_beyond_free_rescues) == (0, 1)


def test_a_job_run_again_after_its_handler_returned_is_reported_unless_its_worker_died(
        db: psycopg.Connection[Any]) -> None:
    w1, w2 = factories.insert_worker(db, queues=["chaos"]), factories.insert_worker(db, queues=["chaos"])
    # Attempt 1 returned at t=1 on a live w1, but a heartbeat rescued it as ClaimLost before
    # its completion was written (t=2); attempt 2 ran it again.
    job_id = job(db, 0, attempts=2, worker=w2)
    factories.insert_execution(db, job_id, attempt=1, outcome="lost", worker_id=w1, started_at=at(0),
                               finished_at=at(2), error_type="ClaimLost", error_message="never received")
    db.execute("INSERT INTO chaos.runs (job_id, n, attempt, worker_id, pid, claimed_at, started_at, ended_at,"
               " outcome) VALUES (%s, 0, 1, %s, 1, %s, %s, %s, 'returned')", (job_id, w1, at(0), at(0), at(1)))
    attempt(db, job_id, 0, 2, outcome="completed", started=3, closed=4, ran_until=3.5, worker=w2)
    report = audit(db, 1)
    assert report.rerun_after_success == 1
    assert "ran again after a handler of theirs returned" in problems(report)
    # The same, but w1 died before writing the completion (the stale sweep closed it): allowed.
    db.execute("UPDATE pgq.job_executions SET error_type = 'WorkerLost' WHERE job_id = %s AND attempt = 1", (job_id,))
    report = audit(db, 1)
    assert report.violations == [], "\n".join(report.violations)
    assert report.rerun_after_success == 0
    # Or w1 reported a failure for it: its handler raised after recording 'returned' (the
    # recording connection broke on its last write): not a success thrown away.
    db.execute("UPDATE pgq.job_executions SET outcome = 'failed', error_type = 'OperationalError'"
               " WHERE job_id = %s AND attempt = 1", (job_id,))
    report = audit(db, 1)
    assert report.violations == [], "\n".join(report.violations)
    assert report.rerun_after_success == 0


def test_a_claim_taken_again_by_the_same_worker_on_the_same_attempt(db: psycopg.Connection[Any]) -> None:
    """A rescue gave w's claim of attempt 1 back while its handler ran on (its start not
    reported yet); w claimed the job again on attempt 1 at t=2. The copy it still held
    settles the new claim (no second run), or a second run settles it: both are one run
    per claim. A second run of the first claim is a claim executed twice."""
    w = factories.insert_worker(db, queues=["chaos"])
    job_id = job(db, 0, attempts=1, worker=w)
    db.execute("UPDATE pgq.jobs SET free_rescues = 1 WHERE id = %s", (job_id,))
    factories.insert_execution(db, job_id, attempt=1, outcome="completed", worker_id=w, started_at=at(2),
                               finished_at=at(4))
    db.execute("INSERT INTO chaos.runs (job_id, n, attempt, worker_id, pid, claimed_at, started_at, ended_at,"
               " outcome) VALUES (%s, 0, 1, %s, 1, %s, %s, %s, 'returned')", (job_id, w, at(0), at(0.1), at(3)))
    report = audit(db, 1)
    assert report.violations == [], "\n".join(report.violations)
    assert (report.overlaps, report.late, report.charged_unstarted) == (0, 0, 0)
    # Without the refund recorded, the first claim ends without a close: reported.
    db.execute("UPDATE pgq.jobs SET free_rescues = 0 WHERE id = %s", (job_id,))
    db.execute("INSERT INTO chaos.runs (job_id, n, attempt, worker_id, pid, claimed_at, started_at, ended_at,"
               " outcome) VALUES (%s, 0, 1, %s, 1, %s, %s, %s, 'returned')", (job_id, w, at(2), at(2.1), at(3.5)))
    assert "a claim the database never closed" in problems(audit(db, 1))
    db.execute("UPDATE pgq.jobs SET free_rescues = 1 WHERE id = %s", (job_id,))
    report = audit(db, 1)
    assert report.violations == [], "\n".join(report.violations)
    assert report.late == 1  # the first run went on after the new claim
    db.execute("INSERT INTO chaos.runs (job_id, n, attempt, worker_id, pid, claimed_at, started_at, ended_at,"
               " outcome) VALUES (%s, 0, 1, %s, 1, %s, %s, %s, 'raised')", (job_id, w, at(0), at(0.2), at(0.3)))
    assert "claim(s) executed more than once" in problems(audit(db, 1))


def test_a_stalled_worker_starting_a_job_taken_from_it_is_late_not_a_run_again(db: psycopg.Connection[Any]) -> None:
    """w1 claimed attempt 1 at t=0 and stalled before starting it; the rescue gave the
    attempt back and w2 ran and completed it (t=2..3). w1 came back and started its
    buffered copy at t=5: late (its claim was closed), not a success run again."""
    w1, w2 = factories.insert_worker(db, queues=["chaos"]), factories.insert_worker(db, queues=["chaos"])
    job_id = job(db, 0, attempts=1, worker=w2)
    db.execute("UPDATE pgq.jobs SET free_rescues = 1 WHERE id = %s", (job_id,))
    attempt(db, job_id, 0, 1, outcome="completed", started=2, closed=4, ran_until=3, worker=w2)
    db.execute("INSERT INTO chaos.runs (job_id, n, attempt, worker_id, pid, claimed_at, started_at, ended_at,"
               " outcome) VALUES (%s, 0, 1, %s, 2, %s, %s, %s, 'returned')", (job_id, w1, at(0), at(5), at(5.5)))
    report = audit(db, 1)
    assert report.violations == [], "\n".join(report.violations)
    assert (report.rerun_after_success, report.late, report.overlaps) == (0, 1, 0)
    # The same start on a claim made after w2's (a real second run): reported.
    db.execute("UPDATE chaos.runs SET claimed_at = %s WHERE worker_id = %s", (at(4.5), w1))
    assert "ran again after a handler of theirs returned" in problems(audit(db, 1))
