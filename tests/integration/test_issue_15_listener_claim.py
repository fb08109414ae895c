"""Issue 15: an idle worker claims a notified job on its LISTEN thread.

Between a NOTIFY and the handler an idle worker used three thread hand-offs
(listener -> claim loop -> claimer thread -> runner thread). Now the listener
claims itself when the worker is idle and hands the jobs to a runner (one
hand-off). The claim runs on the listener thread, outside the loop, so the
windows it opens are tested here: what the heartbeat sees between the claim's
commit and the hand-over, and a stop asked meanwhile (``run()`` must not return
before those jobs reached the runner, where shutdown finds them).

The poll interval is two minutes, so only a NOTIFY can run a job within the waits.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
import pytest

import pgq
from pgq.job import Job
from pgq.queries import Queries

pytestmark = pytest.mark.integration

WAIT = 15.0


class Recorded(Queries):
    """pgq's statements; records which thread made each claim and what it got."""

    def __init__(self, schema: str) -> None:
        super().__init__(schema)
        self.claims: list[tuple[str, list[int]]] = []

    def get_runnable_jobs_v2(self, conn: Any, queues: Sequence[str], worker_id: uuid.UUID, max_jobs: int,
                             *args: Any, **kwargs: Any) -> list[Job]:
        jobs: list[Job] = super().get_runnable_jobs_v2(conn, queues, worker_id, max_jobs, *args, **kwargs)
        self.claims.append((threading.current_thread().name, [job.id for job in jobs]))
        return jobs


def _worker(settings: pgq.Settings, ran: list[int]) -> tuple[pgq.Queue, Recorded, pgq.Worker]:
    slow_poll = settings.replace(listen=True, poll_interval_seconds=120.0)
    q = pgq.Queue(slow_poll, strict_tasks=False)
    queries = Recorded(slow_poll.schema)
    q.queries = queries

    @q.task(name="note")
    def note() -> None:
        ran.append(pgq.current_job().job.id)

    return q, queries, q.worker(concurrency=4, install_signal_handlers=False, run_maintenance=False)


def _shut_down(w: pgq.Worker, runner: threading.Thread, *queues: pgq.Queue) -> None:
    w.stop()
    runner.join(timeout=60)
    for q in queues:
        q.close()
    assert not runner.is_alive()


def _wait_idle(w: pgq.Worker) -> None:
    assert w._idle.wait(WAIT), "the worker never went idle"  # set after the listener started
    listener = w._listener
    assert listener is not None and listener.connected.wait(WAIT)


def test_an_idle_worker_claims_a_notified_job_on_its_listen_thread(settings: pgq.Settings) -> None:
    ran: list[int] = []
    q, queries, w = _worker(settings, ran)
    producer = pgq.Queue(settings, strict_tasks=False)
    runner = threading.Thread(target=w.run)
    runner.start()
    try:
        _wait_idle(w)
        job_id = producer.enqueue("note")
        assert producer.wait(job_id, timeout=WAIT) is None
    finally:
        _shut_down(w, runner, producer, q)
    assert ran == [job_id]
    # Before: a claimer thread (pgq-claim-N) claimed it, woken by the claim loop.
    assert [name for name, ids in queries.claims if job_id in ids] == ["pgq-listener"]


def test_between_the_listeners_claim_and_the_hand_over_the_job_is_held_and_a_stop_waits(
        settings: pgq.Settings, conn: psycopg.Connection[Any]) -> None:
    ran: list[int] = []
    q, queries, w = _worker(settings, ran)
    producer = pgq.Queue(settings, strict_tasks=False)
    seen_held: list[list[int]] = []
    returned = threading.Event()
    held, release = threading.Event(), threading.Event()
    hand_over = w._claims.hand_over

    def hold_then_hand_over(jobs: list[Job]) -> None:
        # The claim is committed and came back; its jobs are not the runner's yet.
        seen_held.append(w._heartbeat.held_ids())
        held.set()
        assert release.wait(WAIT), "the test never released the claim"
        hand_over(jobs)

    w._claims.hand_over = hold_then_hand_over  # type: ignore[method-assign]

    def run() -> None:
        try:
            w.run()
        finally:
            returned.set()

    runner = threading.Thread(target=run)
    runner.start()
    try:
        _wait_idle(w)
        job_id = producer.enqueue("note")
        assert held.wait(WAIT), "the listener never claimed the job"
        # Committed, not handed over: the heartbeat lists it (else a heartbeat would
        # report it lost), and a stop asked now does not end run() under it.
        w.stop()
        assert not returned.wait(0.5), "run() returned while the listener's claim was still out"
        release.set()
        runner.join(timeout=60)
    finally:
        release.set()
        _shut_down(w, runner, producer, q)
    assert seen_held == [[job_id]]
    assert [name for name, ids in queries.claims if job_id in ids] == ["pgq-listener"]
    query = sql.SQL("SELECT status::text, worker_id, attempts, (SELECT count(*) FROM {0}.job_executions AS e"
                    " WHERE e.job_id = j.id) FROM {0}.jobs AS j WHERE id = %s").format(sql.Identifier(settings.schema))
    status, worker, attempts, executions = conn.execute(query, (job_id,)).fetchone()
    # Handed over while stopping: not started, so released to the queue untouched, its
    # attempt given back (or, had a runner started it first, completed); never left
    # running for a worker that is gone.
    assert (status, ran) in [("queued", []), ("completed", [job_id])]
    if status == "queued":
        assert (worker, attempts, executions) == (None, 0, 0)
