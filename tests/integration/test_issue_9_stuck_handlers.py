"""A sync handler past its timeout no longer shrinks the worker (issue 9, defect 4).

A thread cannot be killed. Before, the timed-out job kept its runner thread
until the handler returned, no thread took its place, and the heartbeat's
load did not show it: a worker of concurrency 2 with one stuck handler ran
one job at a time, for ever. Now the job is failed at its deadline, a new
runner thread takes the stuck one's place, the stuck handler is counted
(``Worker.stuck_handlers``, ``workers.stuck_handlers``, ``pgq workers``), and
at ``max_stuck_handlers`` the worker drains and ``run()`` raises.

Deadlines follow the worker's injected ``ManualClock``; handlers block on
events that the test releases at the end; nothing sleeps.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

import factories
import pgq
from factories import RunningWorker, eventually
from pgq.cli import main
from pgq.clock import ManualClock

pytestmark = [pytest.mark.integration, pytest.mark.both_modes]

WAIT = 10.0


@pytest.fixture
def q(short: pgq.Settings) -> Iterator[pgq.Queue]:
    queue = pgq.connect(settings=short)
    yield queue
    queue.close()


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end of every test: the stuck handlers return (and their threads end)."""
    event = threading.Event()
    yield event
    event.set()


def status(conn: psycopg.Connection[Any], job_id: int) -> str:
    return str(factories.job(conn, job_id)["status"])


def register_tasks(q: pgq.Queue, release: threading.Event, started: threading.Semaphore) -> threading.Barrier:
    """``stuck``: ignores ``cancelled`` and blocks until ``release``; ``pair``: returns only
    when two of them run at the same time."""
    barrier = threading.Barrier(2, timeout=WAIT)

    @q.task(name="stuck", timeout=5, max_attempts=1)
    def stuck() -> str:
        started.release()
        release.wait(WAIT * 6)
        return "too late"

    @q.task(name="pair")
    def pair(n: int) -> int:
        barrier.wait()
        return n

    @q.task(name="quick")
    def quick(n: int) -> int:
        return n

    return barrier


def test_a_stuck_handler_is_replaced_and_counted(q: pgq.Queue, conn: psycopg.Connection[Any],
                                                 release: threading.Event,
                                                 running: Callable[..., RunningWorker]) -> None:
    started = threading.Semaphore(0)
    register_tasks(q, release, started)
    clock = ManualClock()
    worker = q.worker(queues=["default"], concurrency=2, install_signal_handlers=False, run_maintenance=False,
                      clock=clock)
    run = running(worker)
    stuck = q.enqueue("stuck")
    assert started.acquire(timeout=WAIT)
    clock.advance(5.0)  # the job's deadline
    eventually(lambda: status(conn, stuck) == "dead", "the stuck job to be failed at its deadline")
    assert factories.job(conn, stuck)["last_error"].startswith("JobTimeout")

    # Two jobs that finish only when they run side by side: the worker still runs two at once.
    pairs = [q.enqueue("pair", {"n": n}) for n in range(4)]
    eventually(lambda: all(status(conn, p) == "completed" for p in pairs), "the pairs to run two at a time",
               timeout=WAIT * 2)
    assert [q.get(p).result for p in pairs] == [0, 1, 2, 3]

    # Counted honestly: one stuck handler, no job held, capacity unchanged.
    assert (worker.stuck_handlers, worker.in_flight) == (1, 0)
    worker.heartbeat()
    w = factories.worker(conn, worker.id)
    assert (w["stuck_handlers"], w["current_load"], w["capacity"]) == (1, 0, 2)
    shown = json.loads(CliRunner().invoke(main, ["--database-url", q.settings.database_url or "", "workers",
                                                 "--json"]).output)
    assert [(r["id"], r["stuck_handlers"], r["capacity"]) for r in shown] == [(str(worker.id), 1, 2)]
    said = CliRunner().invoke(main, ["--database-url", q.settings.database_url or "", "status"]).output
    assert "1 stuck handler(s)" in said

    # Once the handler returns, its thread ends, the count falls back, and its late
    # result is not written over the timeout.
    release.set()
    eventually(lambda: worker.stuck_handlers == 0, "the stuck handler to return")
    worker.heartbeat()
    assert factories.worker(conn, worker.id)["stuck_handlers"] == 0
    assert q.get(stuck).result is None and status(conn, stuck) == "dead"
    worker.stop()
    run.thread.join(WAIT)
    assert run.error is None and not run.thread.is_alive()


def test_at_max_stuck_handlers_the_worker_drains_and_run_raises(q: pgq.Queue, conn: psycopg.Connection[Any],
                                                                 release: threading.Event,
                                                                 running: Callable[..., RunningWorker]) -> None:
    started = threading.Semaphore(0)
    register_tasks(q, release, started)
    clock = ManualClock()
    worker = q.worker(queues=["default"], concurrency=3, install_signal_handlers=False, run_maintenance=False,
                      clock=clock, max_stuck_handlers=2)
    run = running(worker)
    first, second = q.enqueue("stuck"), q.enqueue("stuck")
    assert started.acquire(timeout=WAIT) and started.acquire(timeout=WAIT)
    clock.advance(5.0)
    assert run.done.wait(WAIT), "the worker did not stop at max_stuck_handlers"
    assert isinstance(run.error, pgq.TooManyStuckHandlers)
    assert (run.error.limit, run.error.stuck) == (2, 2)
    assert status(conn, first) == "dead" and status(conn, second) == "dead"
    w = factories.worker(conn, worker.id)
    assert (w["status"], w["stuck_handlers"]) == ("stopped", 2)  # left in the row at exit
    later = q.enqueue("pair", {"n": 1})
    assert status(conn, later) == "queued"  # nothing claimed after the drain


def test_a_cancelled_handler_that_runs_on_is_replaced_at_its_deadline(
    q: pgq.Queue, conn: psycopg.Connection[Any], release: threading.Event,
    running: Callable[..., RunningWorker],
) -> None:
    started = threading.Semaphore(0)
    register_tasks(q, release, started)
    clock = ManualClock()
    worker = q.worker(queues=["default"], concurrency=1, install_signal_handlers=False, run_maintenance=False,
                      clock=clock, max_stuck_handlers=2)
    running(worker)
    job_id = q.enqueue("stuck")
    assert started.acquire(timeout=WAIT)
    q.cancel(job_id)
    eventually(lambda: status(conn, job_id) == "cancelled", "the cancel")
    clock.advance(5.0)
    eventually(lambda: worker.stuck_handlers == 1, "the cancelled handler's thread to be replaced")
    # concurrency 1, and its only thread is stuck: the replacement runs the next job.
    other = q.enqueue("quick", {"n": 7})
    assert q.wait(other, timeout=WAIT) == 7
    assert status(conn, job_id) == "cancelled"  # no timed_out outcome over the cancel


def test_max_stuck_handlers_is_checked(q: pgq.Queue) -> None:
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(pgq.ValidationError, match="max_stuck_handlers"):
            q.worker(queues=["default"], max_stuck_handlers=bad)
