"""Issue 9, defect 1: a heartbeat must not throw away a success whose completion is not written yet.

``heartbeat_worker`` rescues, as ``ClaimLost``, every running job the worker
owns but does not list, once its claim is over 10 s old. A job is the worker's
until its outcome is committed: a heartbeat that lands between "handler
returned" and "``complete_jobs`` committed" must still list it, or the success
is lost and the job runs again.

The completion is held deterministically: the queue's ``complete_jobs`` waits
for an event before it sends anything (no row lock: the rescue skips locked
rows, which would hide the defect). The claim is made to look a minute old
with SQL; nothing sleeps.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest

import pgq
from factories import eventually
from pgq.queries import Queries

pytestmark = [pytest.mark.integration, pytest.mark.both_modes]

WAIT = 10.0


class HeldCompletions(Queries):
    """pgq's statements, except that ``complete_jobs`` waits for ``release`` before it runs."""

    def __init__(self, schema: str) -> None:
        super().__init__(schema)
        self.reached = threading.Event()
        self.release = threading.Event()

    def complete_jobs(self, conn: Any, worker_id: uuid.UUID, job_ids: Sequence[int], attempts: Sequence[int],
                      results_json: Sequence[str | None]) -> set[int]:
        self.reached.set()
        assert self.release.wait(WAIT), "the test never let the completion through"
        return super().complete_jobs(conn, worker_id, job_ids, attempts, results_json)


def test_a_heartbeat_while_a_completion_is_unwritten_does_not_rescue_the_job(
    settings: pgq.Settings, conn: psycopg.Connection[Any],
) -> None:
    q = pgq.Queue(settings, strict_tasks=False)
    held = HeldCompletions(settings.schema)
    q.queries = held
    runs: list[int] = []

    @q.task(name="slow")
    def slow() -> str:
        job = pgq.current_job().job
        runs.append(job.id)
        # The claim looks a minute old: a heartbeat that does not list the job rescues it.
        conn.execute("UPDATE pgq.jobs SET started_at = now() - interval '1 minute' WHERE id = %s", (job.id,))
        return "done"

    try:
        job_id = q.enqueue("slow")
        worker = q.worker(queues=["default"], install_signal_handlers=False, run_maintenance=False)
        ran: list[int] = []
        thread = threading.Thread(target=lambda: ran.append(worker.run_once()), daemon=True)
        thread.start()
        assert held.reached.wait(WAIT), "the completion was never attempted"
        # The handler returned; its completion is not written. The worker still holds the job.
        worker.heartbeat()
        status = conn.execute("SELECT status::text, attempts FROM pgq.jobs WHERE id = %s", (job_id,)).fetchone()
        assert status == ("running", 1), "the heartbeat rescued a job whose success was not written yet"
        held.release.set()
        thread.join(WAIT)
        assert not thread.is_alive() and ran == [1]
    finally:
        held.release.set()
        q.close()
    row = conn.execute("SELECT status::text, attempts, result FROM pgq.jobs WHERE id = %s", (job_id,)).fetchone()
    assert row == ("completed", 1, "done")
    history = conn.execute("SELECT attempt, outcome::text FROM pgq.job_executions WHERE job_id = %s ORDER BY id",
                           (job_id,)).fetchall()
    assert history == [(1, "completed")]
    assert runs == [job_id]
    assert worker.counters.completed == 1 and worker.counters.stale_reports == 0


def test_a_heartbeat_lists_the_jobs_whose_outcome_is_queued(settings: pgq.Settings) -> None:
    """The same promise, seen from the worker: between the handler's return and the
    write, the job is among the ids the heartbeat sends."""
    q = pgq.Queue(settings, strict_tasks=False)
    held = HeldCompletions(settings.schema)
    q.queries = held

    @q.task(name="quick")
    def quick() -> None:
        return None

    try:
        job_id = q.enqueue("quick")
        worker = q.worker(queues=["default"], install_signal_handlers=False, run_maintenance=False)
        thread = threading.Thread(target=worker.run_once, daemon=True)
        thread.start()
        assert held.reached.wait(WAIT)
        assert worker.in_flight == 0  # finished: it no longer takes a runner's capacity
        assert worker._heartbeat.held_ids() == [job_id]
        held.release.set()
        thread.join(WAIT)
        assert worker._heartbeat.held_ids() == []
    finally:
        held.release.set()
        q.close()


def test_a_heartbeat_that_waited_for_a_connection_lists_the_jobs_claimed_meanwhile(
    settings: pgq.Settings, conn: psycopg.Connection[Any],
) -> None:
    """The heartbeat takes its list once it has a connection. Taken before, a list could wait
    behind a busy pool (the pool-exhaustion chaos scenario: two connections, statements blocked
    on locks) longer than the 10 s after which the database rescues an unlisted job as ClaimLost,
    and miss a job claimed meanwhile: rescued while its worker held it, and run again."""
    q = pgq.Queue(settings.replace(pool_size=2), strict_tasks=False)
    try:
        job_id = q.enqueue("quick")
        worker = q.worker(queues=["default"], install_signal_handlers=False, run_maintenance=False)
        worker._register()
        pool = q.pool
        taken = [pool.getconn(), pool.getconn()]  # every connection busy
        beat = threading.Thread(target=worker.heartbeat, daemon=True)
        beat.start()
        eventually(lambda: pool.get_stats().get("requests_waiting", 0) >= 1, "the heartbeat to wait for a connection")
        # Meanwhile a claim of this worker's returns (on a connection of its own here), and
        # looks a minute old to the database.
        base, through = worker._positions.reserve(1)
        jobs = q.queries.get_runnable_jobs_v2(conn, ["default"], worker.id, 1, base, through)
        assert [j.id for j in jobs] == [job_id]
        worker._positions.returned(base, jobs)
        conn.execute("UPDATE pgq.jobs SET started_at = now() - interval '1 minute' WHERE id = %s", (job_id,))
        for c in taken:
            pool.putconn(c)
        beat.join(WAIT)
        assert not beat.is_alive()
        row = conn.execute("SELECT status::text, worker_id FROM pgq.jobs WHERE id = %s", (job_id,)).fetchone()
        assert row == ("running", worker.id), "the heartbeat rescued a job its worker held"
    finally:
        q.close()
