"""Issue 9: a job a worker claims again while it still holds it runs once.

A rescue that gives an attempt back (its handler had not started, as far as
the worker had reported) hands the same attempt number out again. When the
worker that still holds the job claims it again, the fence (job, worker,
attempt) cannot tell the two claims apart: starting it again would run the
job twice, and the first outcome written would settle both. The copy held
settles it; the new claim is not started. A copy held on an earlier attempt is
obsolete: the new claim runs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import pgq
from factories import eventually

pytestmark = [pytest.mark.integration, pytest.mark.both_modes]

WAIT = 20.0


@pytest.fixture
def q(settings: pgq.Settings) -> Iterator[pgq.Queue]:
    # Polls every 50 ms (no LISTEN); no heartbeat during the test (it would stop the
    # handler of a job the database no longer gives to this worker).
    s = settings.replace(listen=False, poll_interval_seconds=0.05, redis_poll_interval_seconds=0.05,
                         heartbeat_interval_seconds=50.0, stale_after_seconds=120.0)
    queue = pgq.connect(settings=s, strict_tasks=False)
    yield queue
    queue.close()


def test_a_job_given_back_and_claimed_again_by_the_worker_holding_it_runs_once(
    q: pgq.Queue, conn: psycopg.Connection[Any],
) -> None:
    runs: list[int] = []
    go = threading.Event()

    @q.task(name="once")
    def once() -> str:
        runs.append(pgq.current_job().job.attempts)
        assert go.wait(WAIT)
        return "done"

    job_id = q.enqueue("once")
    worker = q.worker(queues=["default"], concurrency=2, install_signal_handlers=False, run_maintenance=False)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        eventually(lambda: runs, "the handler to start")
        # A rescue gives the attempt back (as for a job above its worker's watermark) ...
        conn.execute("SELECT pgq.rescue_job(%s, true, 'lost', 'ClaimLost', 'test', 0, now())", (job_id,))
        # ... and the same worker claims it again, on the same attempt number.
        eventually(lambda: conn.execute("SELECT status::text, attempts, worker_id FROM pgq.jobs WHERE id = %s",
                                        (job_id,)).fetchone() == ("running", 1, worker.id), "the claim again")
        # The worker took the claim: it counts it as claimed again (or, before the fix, ran it again).
        eventually(lambda: worker.counters.extra.get("claimed_again") == 1 or len(runs) > 1,
                   "the worker to take the claim")
        go.set()
        assert q.wait(job_id, timeout=WAIT) == "done"
    finally:
        go.set()
        worker.stop()
        thread.join(WAIT)
    assert runs == [1]  # the handler ran once; its completion settled the second claim
    assert conn.execute("SELECT attempt, outcome::text FROM pgq.job_executions WHERE job_id = %s",
                        (job_id,)).fetchall() == [(1, "completed")]


class RescueAndClaimAgainAroundTheWrite(pgq.queries.Queries):
    """``complete_jobs`` as in the race it is for: the database rescues the job (giving the attempt
    back) before the completion is written, so the write is refused as stale; the same worker's
    claim of the job commits right after, and the claim loop checks what the worker holds
    (``Acknowledger.holds``, as ``ClaimLoop.hand_over`` does) before the refusal is handled."""

    def __init__(self, schema: str, url: str) -> None:
        super().__init__(schema)
        self.url = url
        self.worker: pgq.Worker | None = None
        self.claimed_again: list[set[int]] = []

    def complete_jobs(self, conn: Any, worker_id: Any, job_ids: Any, attempts: Any, results_json: Any) -> set[int]:
        if self.claimed_again:  # the race once; later writes go through
            return super().complete_jobs(conn, worker_id, job_ids, attempts, results_json)
        assert self.worker is not None
        with psycopg.connect(self.url, autocommit=True) as other:
            other.execute("SELECT pgq.rescue_job(%s, true, 'lost', 'ClaimLost', 'test', 0, now())", (job_ids[0],))
            done = super().complete_jobs(conn, worker_id, job_ids, attempts, results_json)
            assert done == set()  # refused: the job was queued again
            claimed = super().get_runnable_jobs_v2(other, ["default"], worker_id, 1, 1000, None)
        self.claimed_again.append(self.worker._acknowledger.holds(claimed))
        return done


def test_a_completion_refused_because_the_job_was_claimed_again_meanwhile_settles_the_new_claim(
    settings: pgq.Settings, conn: psycopg.Connection[Any],
) -> None:
    """Found by the pool-exhaustion chaos scenario: the held copy's completion was refused (the
    rescue came first), the new claim was not started (the copy held was to settle it), and the
    job sat running, listed by no heartbeat, until the database rescued it as ClaimLost and ran it
    again elsewhere. The refused completion must be written again, for the new claim."""
    q = pgq.connect(settings=settings.replace(listen=False, heartbeat_interval_seconds=50.0,
                                                stale_after_seconds=120.0), strict_tasks=False)
    queries = RescueAndClaimAgainAroundTheWrite(settings.schema, settings.require_database_url())
    q.queries = queries
    runs: list[int] = []

    @q.task(name="once")
    def once() -> str:
        runs.append(pgq.current_job().job.attempts)
        return "done"

    job_id = q.enqueue("once")
    worker = q.worker(queues=["default"], concurrency=2, install_signal_handlers=False, run_maintenance=False)
    queries.worker = worker
    try:
        assert worker.run_once() == 1
        assert queries.claimed_again == [{job_id}]  # the new claim was taken as settled by the copy held
        row = conn.execute("SELECT status::text, attempts FROM pgq.jobs WHERE id = %s", (job_id,)).fetchone()
        assert row == ("completed", 1)
        assert conn.execute("SELECT attempt, outcome::text FROM pgq.job_executions WHERE job_id = %s",
                            (job_id,)).fetchall() == [(1, "completed")]
        assert runs == [1]
        assert worker._acknowledger.pending_ids() == []
        assert worker.counters.stale_reports == 0 and worker.counters.completed == 1
    finally:
        worker.close()
        q.close()
