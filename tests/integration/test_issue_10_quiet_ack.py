"""Issue 10, the graph figure: a worker that holds no other job writes a completion at once.

A chain of jobs advances one completion commit at a time (the commit releases
the next job), and the acknowledger used to wait out ``ack_interval_seconds``
for more outcomes even when the worker held nothing that could produce one.
Now it writes what it gathered as soon as the runner is empty; while a job
still runs, completions are gathered as before. The interval here is a
minute, so only the early write can complete a job within the waits.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

import factories
import pgq

pytestmark = pytest.mark.integration

WAIT = 15.0


def _worker(settings: pgq.Settings, gate: threading.Event) -> tuple[pgq.Queue, pgq.Worker]:
    slow_ack = settings.replace(ack_interval_seconds=60.0, poll_interval_seconds=120.0)
    q = pgq.Queue(slow_ack, strict_tasks=False)

    @q.task(name="quick")
    def quick() -> None:
        pass

    @q.task(name="gated")
    def gated() -> None:
        assert gate.wait(WAIT), "the test never opened the gate"

    return q, q.worker(concurrency=4, install_signal_handlers=False, run_maintenance=False)


def _run(w: pgq.Worker) -> threading.Thread:
    thread = threading.Thread(target=w.run, name="test-worker", daemon=True)
    thread.start()
    return thread


def _stop(w: pgq.Worker, thread: threading.Thread, q: pgq.Queue) -> None:
    w.stop()
    thread.join(timeout=60)
    q.close()
    assert not thread.is_alive()


def test_a_worker_holding_nothing_else_writes_a_completion_without_waiting_the_interval(
        settings: pgq.Settings) -> None:
    gate = threading.Event()
    q, w = _worker(settings, gate)
    thread = _run(w)
    try:
        job_id = q.enqueue("quick")
        # Before: written after the 60 s interval, long after this wait gives up.
        assert q.wait(job_id, timeout=WAIT) is None
    finally:
        _stop(w, thread, q)
    assert w.counters.ack_round_trips == 1


def test_while_a_job_still_runs_completions_are_gathered_into_one_batch(settings: pgq.Settings) -> None:
    gate = threading.Event()
    q, w = _worker(settings, gate)
    gated, quick = q.enqueue_many([q.job_spec("gated"), q.job_spec("quick")])
    acknowledger: Any = w._acknowledger
    thread = _run(w)
    try:
        # The quick job finished and its outcome waits in the acknowledger, unwritten,
        # while the gated job runs (the worker holds it: more outcomes are coming).
        factories.eventually(lambda: quick in acknowledger.pending_ids() and gated in w._runner.owned_ids(),
                             "the quick job's outcome queued while the gated job runs", timeout=WAIT)
        assert q.get(quick).status == "running"
        gate.set()
        assert q.wait(gated, timeout=WAIT) is None
        assert q.get(quick).status == "completed"
    finally:
        gate.set()
        _stop(w, thread, q)
    assert (w.counters.completed, w.counters.ack_round_trips) == (2, 1)

