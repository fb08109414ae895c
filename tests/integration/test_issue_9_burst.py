"""What a burst run waits for (issue 9, defect 8).

``Worker.run(burst=True)`` (``pgq worker --burst``) returns once it holds no
job, every outcome it produced is written, and none of its queues has a queued
or retrying job due now or within ``burst_wait_seconds``. Before, it returned
while the jobs it had just failed were ``retrying`` with their retry due within
a second. Retry delays are the database's (``run_at``): nothing here sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import pgq

pytestmark = [pytest.mark.integration, pytest.mark.both_modes]

QUICK = pgq.Backoff(base=0.2, factor=1.0, max=0.2, jitter=0.0)


@pytest.fixture
def q(short: pgq.Settings) -> Iterator[pgq.Queue]:
    queue = pgq.connect(settings=short)
    yield queue
    queue.close()


def burst(q: pgq.Queue, **options: Any) -> pgq.Worker:
    worker = q.worker(queues=["default"], install_signal_handlers=False, run_maintenance=False, **options)
    finished = threading.Event()

    def run() -> None:
        try:
            worker.run(burst=True)
        finally:
            finished.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert finished.wait(30), "the burst run did not return"
    thread.join()
    return worker


def attempts(conn: psycopg.Connection[Any], job_id: int) -> list[tuple[int, str]]:
    return [(int(r[0]), str(r[1])) for r in conn.execute(
        "SELECT attempt, outcome::text FROM pgq.job_executions WHERE job_id = %s ORDER BY id", (job_id,))]


def test_burst_returns_only_after_the_retry_of_a_job_it_failed(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    calls: list[int] = []

    @q.task(name="flaky", max_attempts=3, retry=QUICK)
    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the first attempt fails")
        return "second attempt"

    job_id = q.enqueue("flaky")
    burst(q)
    job = q.get(job_id)
    assert (job.status, job.attempts, job.result) == (pgq.JobStatus.COMPLETED, 2, "second attempt")
    assert attempts(conn, job_id) == [(1, "failed"), (2, "completed")]


def test_burst_runs_every_retry_up_to_the_dead_letter_queue(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    @q.task(name="always_fails", max_attempts=3, retry=QUICK)
    def always_fails() -> None:
        raise RuntimeError("no luck")

    job_id = q.enqueue("always_fails")
    burst(q)
    assert q.get(job_id).status == pgq.JobStatus.DEAD
    assert attempts(conn, job_id) == [(1, "failed"), (2, "failed"), (3, "failed")]


def test_burst_runs_a_delayed_job_due_within_the_wait(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    @q.task(name="later")
    def later() -> str:
        return "ran"

    job_id = q.enqueue("later", delay=0.3)
    burst(q)
    assert q.get(job_id).status == pgq.JobStatus.COMPLETED


def test_burst_does_not_wait_for_a_retry_due_after_the_wait(short: pgq.Settings,
                                                            conn: psycopg.Connection[Any]) -> None:
    q = pgq.connect(settings=short.replace(burst_wait_seconds=5.0))

    @q.task(name="much_later", max_attempts=3)
    def much_later() -> None:
        raise pgq.Retry(after=3600)

    try:
        job_id = q.enqueue("much_later")
        future = q.enqueue("much_later", delay=600)
        burst(q)
        job = q.get(job_id)
        assert (job.status, job.attempts) == (pgq.JobStatus.RETRYING, 1)
        assert q.get(future).status == pgq.JobStatus.QUEUED
    finally:
        q.close()


def test_burst_wait_zero_leaves_a_retry_that_is_not_due_yet(short: pgq.Settings,
                                                             conn: psycopg.Connection[Any]) -> None:
    q = pgq.connect(settings=short.replace(burst_wait_seconds=0.0))

    @q.task(name="flaky", max_attempts=3, retry=pgq.Backoff(base=30.0, factor=1.0, max=30.0, jitter=0.0))
    def flaky() -> None:
        raise RuntimeError("fails")

    try:
        job_id = q.enqueue("flaky")
        burst(q)
        assert (q.get(job_id).status, q.get(job_id).attempts) == (pgq.JobStatus.RETRYING, 1)
    finally:
        q.close()



def test_burst_waits_for_a_child_whose_parent_runs_elsewhere(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    """A waiting child of the burst worker's queue, its parent still queued in a queue another
    worker serves: the burst run waits for the release instead of returning (issue 10)."""
    @q.task(name="parent_task", queue="other")
    def parent_task() -> str:
        return "parent"

    @q.task(name="child_task")
    def child_task() -> str:
        return "child"

    parent = q.enqueue("parent_task")
    child = q.enqueue("child_task", depends_on=[parent])
    worker = q.worker(queues=["default"], install_signal_handlers=False, run_maintenance=False)
    finished = threading.Event()
    thread = threading.Thread(target=lambda: (worker.run(burst=True), finished.set()), daemon=True)
    thread.start()
    assert not finished.wait(1.0), "the burst run returned while the child's parent was still to run"
    other = q.worker(queues=["other"], install_signal_handlers=False, run_maintenance=False)
    assert other.run_once() == 1
    assert finished.wait(30), "the burst run did not return after running the released child"
    thread.join()
    assert q.get(child).status == pgq.JobStatus.COMPLETED
