"""Enqueue -> run -> outcome, end to end, with real workers against Postgres.

Nothing here sleeps to wait for timing: jobs run with ``Worker.run_once()`` or
``run(burst=True)``, handlers block on ``threading.Event`` (with generous
timeouts), timestamps are moved into the past with UPDATE, and anything that
happens in the background is awaited by polling the database with a deadline.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import pgq
from factories import eventually
from pgq.clock import ManualClock
from pgq.queries import Queries
from pgq.testing import QueueClock
from pgq.worker.positions import START_GRACE_SECONDS

pytestmark = [pytest.mark.integration, pytest.mark.both_modes]

WAIT = 10.0  # generous upper bound for anything that should take milliseconds


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def q(short: pgq.Settings) -> Iterator[pgq.Queue]:
    queue = pgq.connect(settings=short)
    yield queue
    queue.close()


def make_worker(q: pgq.Queue, **options: Any) -> pgq.Worker:
    options.setdefault("install_signal_handlers", False)
    options.setdefault("run_maintenance", False)
    options.setdefault("queues", ["default"])
    return q.worker(**options)


class Running:
    """A worker's run() in a background thread."""

    def __init__(self, worker: pgq.Worker, *, burst: bool = False) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(burst,), name="test-worker", daemon=True)
        self.thread.start()

    def _run(self, burst: bool) -> None:
        try:
            self.worker.run(burst=burst)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def stop(self, *, now: bool = False, timeout: float = WAIT) -> None:
        self.worker.stop(now=now)
        self.join(timeout)

    def join(self, timeout: float = WAIT) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not stop in time"
        if self.error is not None:
            raise self.error


@pytest.fixture
def running() -> Iterator[Callable[..., Running]]:
    """Start ``worker.run()`` in a thread; every one still running is stopped after the test."""
    started: list[Running] = []

    def start(worker: pgq.Worker, **kwargs: Any) -> Running:
        r = Running(worker, **kwargs)
        started.append(r)
        return r

    yield start
    for r in started:
        if r.thread.is_alive():
            r.worker.stop(now=True)
            r.thread.join(WAIT)



def status(conn: psycopg.Connection[Any], job_id: int) -> str:
    row = conn.execute("SELECT status::text FROM pgq.jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return str(row[0])


def executions(conn: psycopg.Connection[Any], job_id: int) -> list[tuple[Any, ...]]:
    """(attempt, outcome, error_type, worker_id) per execution, oldest first."""
    return conn.execute(
        "SELECT attempt, outcome::text, error_type, worker_id FROM pgq.job_executions WHERE job_id = %s ORDER BY id",
        (job_id,)).fetchall()


def worker_status(conn: psycopg.Connection[Any], worker_id: uuid.UUID) -> str:
    row = conn.execute("SELECT status::text FROM pgq.workers WHERE id = %s", (worker_id,)).fetchone()
    assert row is not None
    return str(row[0])


# ---------------------------------------------------------------- running jobs


def test_sync_and_async_handlers_store_their_results(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    @q.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    @q.task(name="async_add")
    async def async_add(a: int, b: int) -> dict[str, int]:
        await asyncio.sleep(0)
        return {"sum": a + b, "job": pgq.current_job().job.id}

    @q.task(name="nothing")
    def nothing() -> None:
        return None

    a = q.enqueue("add", {"a": 1, "b": 2})
    b = q.enqueue("async_add", {"a": 2, "b": 3})
    c = q.enqueue("nothing")
    worker = make_worker(q, concurrency=4)
    assert worker.run_once() == 3
    assert q.wait(a, timeout=WAIT) == 3
    assert q.wait(b, timeout=WAIT) == {"sum": 5, "job": b}
    assert q.wait(c, timeout=WAIT) is None
    for job_id in (a, b, c):
        job = q.get(job_id)
        assert (job.status, job.attempts, job.worker_id) == (pgq.JobStatus.COMPLETED, 1, worker.id)
        assert job.finished_at is not None and job.started_at is not None and job.finished_at >= job.started_at
        assert executions(conn, job_id) == [(1, "completed", None, worker.id)]
    row = conn.execute("SELECT min(duration_ms), bool_and(duration_ms = extract(epoch FROM finished_at - started_at)"
                       " * 1000) FROM pgq.job_executions").fetchone()
    assert row is not None and row[0] >= 0 and row[1] is True
    assert worker.counters.completed == 3


def test_burst_runs_every_job_then_returns_and_deregisters(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    seen: list[int] = []
    lock = threading.Lock()

    @q.task(name="square")
    def square(n: int) -> int:
        with lock:
            seen.append(n)
        return n * n

    @q.task(name="async_square")
    async def async_square(n: int) -> int:
        await asyncio.sleep(0)
        with lock:
            seen.append(n)
        return n * n

    ids = q.enqueue_many([{"task": "square" if n % 2 else "async_square", "payload": {"n": n}} for n in range(40)])
    worker = make_worker(q, concurrency=8, batch_size=5)
    worker.run(burst=True)
    assert sorted(seen) == list(range(40))  # each job ran exactly once
    rows = conn.execute("SELECT id, status::text, result FROM pgq.jobs ORDER BY id").fetchall()
    assert rows == [(job_id, "completed", n * n) for n, job_id in enumerate(ids)]
    assert worker_status(conn, worker.id) == "stopped"
    assert worker.counters.completed == 40
    assert worker.counters.claim_round_trips >= 8  # claimed in batches of at most 5


def test_failures_retry_with_backoff_then_go_to_the_dead_letter_queue(q: pgq.Queue,
                                                                      conn: psycopg.Connection[Any]) -> None:
    backoff = pgq.Backoff(base=100, factor=2, max=1000, jitter=0.1)

    @q.task(name="flaky", max_attempts=3, retry=backoff)
    def flaky() -> None:
        raise ConnectionError(f"smtp down on attempt {pgq.current_job().job.attempts}")

    job_id = q.enqueue("flaky")
    worker = make_worker(q)
    for attempt in (1, 2):
        assert worker.run_once() == 1
        job = q.get(job_id)
        assert (job.status, job.attempts) == (pgq.JobStatus.RETRYING, attempt)
        assert job.last_error == f"ConnectionError: smtp down on attempt {attempt}"
        # The database applied the task's backoff (with its jitter) from the failure time.
        row = conn.execute("SELECT extract(epoch FROM j.run_at - e.finished_at) FROM pgq.jobs AS j"
                           " JOIN pgq.job_executions AS e ON e.job_id = j.id AND e.attempt = %s"
                           " WHERE j.id = %s", (attempt, job_id)).fetchone()
        assert row is not None
        expected = backoff.base_delay(attempt)
        assert expected * 0.9 <= float(row[0]) <= expected * 1.1
        assert worker.run_once() == 0  # not due yet
        QueueClock(q).advance(expected * 1.1)  # the longest backoff the jitter allows passes
    assert worker.run_once() == 1
    job = q.get(job_id)
    assert (job.status, job.attempts) == (pgq.JobStatus.DEAD, 3)
    [letter] = q.dead_letters()
    assert (letter.job_id, letter.reason, letter.attempts) == (job_id, "exhausted", 3)
    assert letter.last_error == "ConnectionError: smtp down on attempt 3"
    assert [(e["attempt"], e["outcome"], e["error_type"], e["error_message"]) for e in letter.error_history] == [
        (n, "failed", "ConnectionError", f"smtp down on attempt {n}") for n in (1, 2, 3)
    ]
    trace = conn.execute("SELECT traceback FROM pgq.job_executions WHERE job_id = %s AND attempt = 3",
                         (job_id,)).fetchone()
    assert trace is not None and "in flaky" in trace[0] and "ConnectionError" in trace[0]
    with pytest.raises(pgq.JobFailed, match="smtp down on attempt 3"):
        q.wait(job_id, timeout=WAIT)


def test_retry_signal_overrides_the_backoff(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    @q.task(name="rate_limited", max_attempts=2, retry=pgq.Backoff(base=1, jitter=0.5))
    def rate_limited() -> None:
        raise pgq.Retry(after=42, reason="429 from the API")

    job_id = q.enqueue("rate_limited")
    worker = make_worker(q)
    assert worker.run_once() == 1
    row = conn.execute("SELECT j.status::text, extract(epoch FROM j.run_at - e.finished_at), e.error_type,"
                       " e.error_message FROM pgq.jobs AS j JOIN pgq.job_executions AS e ON e.job_id = j.id"
                       " WHERE j.id = %s", (job_id,)).fetchone()
    assert row is not None
    assert (row[0], float(row[1]), row[2], row[3]) == ("retrying", 42.0, "Retry", "429 from the API")
    QueueClock(q).advance(42)
    assert worker.run_once() == 1  # Retry on the last attempt: the attempts are used up
    assert status(conn, job_id) == "dead"
    assert q.dead_letters()[0].reason == "exhausted"


def test_fatal_goes_to_the_dead_letter_queue_at_once(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    @q.task(name="no_such_user", max_attempts=5)
    def no_such_user(user_id: int) -> None:
        raise pgq.Fatal(f"user {user_id} does not exist")

    job_id = q.enqueue("no_such_user", {"user_id": 7})
    assert make_worker(q).run_once() == 1
    job = q.get(job_id)
    assert (job.status, job.attempts, job.last_error) == (pgq.JobStatus.DEAD, 1, "Fatal: user 7 does not exist")
    [letter] = q.dead_letters()
    assert (letter.job_id, letter.reason) == (job_id, "fatal")


def test_payload_that_does_not_fit_the_handler_is_fatal(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    @q.task(name="greet", max_attempts=5)
    def greet(name: str) -> str:
        return f"hi {name}"

    job_id = q.enqueue("greet", {"nmae": "typo"})
    assert make_worker(q).run_once() == 1
    assert status(conn, job_id) == "dead"
    assert [e[:3] for e in executions(conn, job_id)] == [(1, "failed", "PayloadMismatch")]


def test_error_message_that_postgres_cannot_store_does_not_block_the_worker(
    q: pgq.Queue, conn: psycopg.Connection[Any],
) -> None:
    @q.task(name="binary_error", max_attempts=1)
    def binary_error() -> None:
        raise ValueError("bad byte \x00 and \ud800 in the message")

    @q.task(name="fine")
    def fine() -> str:
        return "ok"

    bad = q.enqueue("binary_error")
    good = q.enqueue("fine")
    worker = make_worker(q)
    done = threading.Event()
    threading.Thread(target=lambda: (worker.run_once(), done.set()), daemon=True).start()
    assert done.wait(WAIT), "the worker got stuck writing the outcomes"
    assert status(conn, bad) == "dead" and status(conn, good) == "completed"
    message = conn.execute("SELECT error_message FROM pgq.job_executions WHERE job_id = %s", (bad,)).fetchone()
    assert message is not None and message[0].startswith("bad byte ")


def test_unknown_task_in_the_database_is_dead_with_unknown_task(q: pgq.Queue, short: pgq.Settings,
                                                                conn: psycopg.Connection[Any]) -> None:
    @q.task(name="known")
    def known() -> None: ...

    with pgq.connect(settings=short, strict_tasks=False) as producer:
        job_id = producer.enqueue("defined.elsewhere", {"x": 1}, max_attempts=5)
    assert make_worker(q).run_once() == 1
    job = q.get(job_id)
    assert job.status is pgq.JobStatus.DEAD
    assert job.last_error is not None and job.last_error.startswith("UnknownTask")
    assert "defined.elsewhere" in job.last_error
    assert q.dead_letters()[0].reason == "fatal"


# ---------------------------------------------------------------- timeouts


def test_sync_handler_over_its_timeout_is_timed_out_and_asked_to_stop(q: pgq.Queue,
                                                                      conn: psycopg.Connection[Any]) -> None:
    observed: list[bool] = []
    returned = threading.Event()

    @q.task(name="slow", timeout=0.3, max_attempts=2)
    def slow() -> str:
        observed.append(pgq.current_job().cancelled.wait(WAIT))
        returned.set()
        return "too late"

    job_id = q.enqueue("slow")
    worker = make_worker(q)
    assert worker.run_once() == 1
    assert returned.wait(WAIT)
    assert observed == [True]  # the handler was told to stop
    assert worker.run_once() == 0  # flushes anything left; the retry is not due yet
    job = q.get(job_id)
    assert (job.status, job.attempts) == (pgq.JobStatus.RETRYING, 1)
    assert job.result is None
    assert [e[:3] for e in executions(conn, job_id)] == [(1, "timed_out", "JobTimeout")]


def test_async_handler_over_its_timeout_is_cancelled_and_timed_out(q: pgq.Queue,
                                                                   conn: psycopg.Connection[Any]) -> None:
    cancelled: list[bool] = []

    @q.task(name="async_slow", timeout=0.3, max_attempts=1)
    async def async_slow() -> None:
        try:
            await asyncio.sleep(WAIT * 3)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    job_id = q.enqueue("async_slow")
    assert make_worker(q).run_once() == 1
    assert cancelled == [True]
    assert status(conn, job_id) == "dead"  # one attempt only
    assert [e[:3] for e in executions(conn, job_id)] == [(1, "timed_out", "JobTimeout")]


# ---------------------------------------------------------------- cancel and lost ownership


def test_cancel_of_a_running_sync_job_stops_it_and_discards_its_completion(
    q: pgq.Queue, conn: psycopg.Connection[Any], running: Callable[..., Running],
) -> None:
    started, returned = threading.Event(), threading.Event()
    observed: list[bool] = []

    @q.task(name="long")
    def long() -> str:
        started.set()
        observed.append(pgq.current_job().cancelled.wait(WAIT))
        returned.set()
        return "finished anyway"

    job_id = q.enqueue("long")
    worker = make_worker(q)
    r = running(worker)
    assert started.wait(WAIT)
    assert q.cancel(job_id) is True
    assert returned.wait(WAIT)
    assert observed == [True]  # the worker (NOTIFY, else its heartbeat) told the handler
    r.stop()
    job = q.get(job_id)
    assert (job.status, job.result) == (pgq.JobStatus.CANCELLED, None)
    assert [e[:3] for e in executions(conn, job_id)] == [(1, "cancelled", "Cancelled")]
    # A completion sent now, however late, is fenced off.
    assert Queries("pgq").complete_jobs(conn, worker.id, [job_id], [1], ['"late"']) == set()
    assert q.get(job_id) == job


def test_cancel_of_a_running_async_job_cancels_the_coroutine(
    q: pgq.Queue, conn: psycopg.Connection[Any], running: Callable[..., Running],
) -> None:
    started, stopped = threading.Event(), threading.Event()

    @q.task(name="async_long")
    async def async_long() -> str:
        started.set()
        try:
            await asyncio.sleep(WAIT * 3)
        except asyncio.CancelledError:
            stopped.set()
            raise
        return "never"

    job_id = q.enqueue("async_long")
    r = running(make_worker(q))
    assert started.wait(WAIT)
    q.cancel(job_id)
    assert stopped.wait(WAIT)
    r.stop()
    assert status(conn, job_id) == "cancelled"
    assert [e[1] for e in executions(conn, job_id)] == ["cancelled"]


def test_worker_that_lost_its_job_to_a_rescue_stops_the_handler_and_its_completion_is_discarded(
    q: pgq.Queue, conn: psycopg.Connection[Any],
) -> None:
    started, returned = threading.Event(), threading.Event()
    observed: list[bool] = []

    @q.task(name="stuck", max_attempts=3)
    def stuck() -> str:
        if pgq.current_job().job.attempts > 1:
            return "second attempt"
        started.set()
        observed.append(pgq.current_job().cancelled.wait(WAIT))
        returned.set()
        return "finished anyway"

    job_id = q.enqueue("stuck")
    clock = ManualClock()
    worker = make_worker(q, clock=clock)
    done = threading.Event()
    threading.Thread(target=lambda: (worker.run_once(), done.set()), daemon=True).start()
    assert started.wait(WAIT)
    worker.heartbeat()  # the job is seen running ...
    clock.advance(START_GRACE_SECONDS)
    worker.heartbeat()  # ... and reported started: a rescue now charges its attempt
    # The worker missed its heartbeats (say, a long GC pause): maintenance rescues its job.
    conn.execute("UPDATE pgq.workers SET last_heartbeat = now() - interval '1 hour' WHERE id = %s", (worker.id,))
    rescued = Queries("pgq").mark_stale_workers(conn, 60)
    assert [(r.worker_id, r.job_id, r.status) for r in rescued] == [(worker.id, job_id, "retrying")]
    # Its next heartbeat tells it; the handler is asked to stop and its result is not reported.
    worker.heartbeat()
    assert returned.wait(WAIT) and observed == [True]
    assert done.wait(WAIT)
    assert worker_status(conn, worker.id) == "active"  # the heartbeat brought it back
    job = q.get(job_id)
    assert (job.status, job.attempts, job.result) == (pgq.JobStatus.RETRYING, 1, None)
    assert [e[:2] for e in executions(conn, job_id)] == [(1, "lost")]
    # The rescued job runs again on the next claim, and completes exactly once.
    assert worker.run_once() == 1
    assert q.wait(job_id, timeout=WAIT) == "second attempt"
    assert [e[:2] for e in executions(conn, job_id)] == [(1, "lost"), (2, "completed")]


# ---------------------------------------------------------------- connections


def test_worker_with_concurrency_64_uses_at_most_pool_size_plus_one_connections(
    short: pgq.Settings, conn: psycopg.Connection[Any], connect: Callable[..., psycopg.Connection[Any]],
    running: Callable[..., Running],
) -> None:
    settings = short.replace(pool_size=3)
    count = 64
    release, all_started, done_sampling = threading.Event(), threading.Event(), threading.Event()
    lock = threading.Lock()
    started = [0]

    def one_more() -> None:
        with lock:
            started[0] += 1
            if started[0] == count:
                all_started.set()

    # Count the database's backends all along, from a connection of its own
    # (the test's own connections are left out).
    sampler_conn = connect()
    ours = [conn.info.backend_pid, sampler_conn.info.backend_pid]
    samples: list[int] = []

    def sample_backends() -> None:
        while not done_sampling.is_set():
            row = sampler_conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                       " AND pid <> ALL(%s)", (ours,)).fetchone()
            assert row is not None
            samples.append(int(row[0]))
            done_sampling.wait(0.005)  # sampling interval

    with pgq.connect(settings=settings) as q:
        @q.task(name="hold")
        def hold() -> None:
            one_more()
            release.wait(WAIT * 3)

        @q.task(name="async_hold")
        async def async_hold() -> None:
            one_more()
            while not release.is_set():  # an async handler that waits without a thread
                await asyncio.sleep(0.01)

        ids = q.enqueue_many([{"task": "hold" if n % 4 else "async_hold"} for n in range(count)])
        sampler = threading.Thread(target=sample_backends, daemon=True)
        sampler.start()
        worker = make_worker(q, concurrency=count)
        r = running(worker)
        try:
            assert all_started.wait(WAIT * 2), f"only {started[0]} of {count} handlers started"
            assert conn.execute("SELECT count(*) FROM pgq.jobs WHERE status = 'running'").fetchone() == (count,)
            eventually(lambda: worker._listener is not None and worker._listener.connected.is_set(), "LISTEN")
        finally:
            release.set()
        eventually(lambda: conn.execute("SELECT count(*) FROM pgq.jobs WHERE id = ANY(%s) AND status = 'completed'",
                                        (ids,)).fetchone() == (count,), "all jobs to complete")
        r.stop()
        done_sampling.set()
        sampler.join(WAIT)
    assert len(samples) > 10
    assert max(samples) > 1  # the pool and the LISTEN connection were seen
    assert max(samples) <= settings.pool_size + 1, max(samples)


# ---------------------------------------------------------------- shutdown


def test_graceful_stop_lets_running_jobs_finish_and_claims_nothing_more(
    q: pgq.Queue, conn: psycopg.Connection[Any], running: Callable[..., Running],
) -> None:
    # The fixture's settings have a 2 s grace; this test needs longer.
    q2 = pgq.connect(settings=q.settings.replace(shutdown_grace_seconds=30))
    release, all_started = threading.Event(), threading.Event()
    lock = threading.Lock()
    started = [0]

    @q2.task(name="block")
    def block() -> str:
        with lock:
            started[0] += 1
            if started[0] == 3:
                all_started.set()
        release.wait(WAIT * 3)
        return "done"

    try:
        ids = q2.enqueue_many([{"task": "block"}] * 4)
        worker = make_worker(q2, concurrency=3)
        r = running(worker)
        assert all_started.wait(WAIT)
        worker.stop()
        assert r.thread.is_alive()  # it waits for the three running handlers
        release.set()
        r.join()
        rows = conn.execute("SELECT id, status::text, attempts FROM pgq.jobs ORDER BY id").fetchall()
        assert [row[1:] for row in rows] == [("completed", 1)] * 3 + [("queued", 0)]
        assert rows[3][0] == ids[3]  # FIFO: the last one was never claimed
        assert worker_status(conn, worker.id) == "stopped"
        outcomes = conn.execute("SELECT outcome::text, count(*) FROM pgq.job_executions GROUP BY 1").fetchall()
        assert outcomes == [("completed", 3)]
    finally:
        release.set()
        q2.close()


@pytest.mark.parametrize(("now", "grace"), [(True, 30.0), (False, 0.2)], ids=["stop-now", "grace-expires"])
def test_stop_now_or_after_the_grace_period_interrupts_running_jobs(
    q: pgq.Queue, conn: psycopg.Connection[Any], running: Callable[..., Running], now: bool, grace: float,
) -> None:
    q2 = pgq.connect(settings=q.settings.replace(shutdown_grace_seconds=grace))
    release, all_started = threading.Event(), threading.Event()
    lock = threading.Lock()
    started = [0]

    @q2.task(name="block", max_attempts=3)
    def block() -> str:
        with lock:
            started[0] += 1
            if started[0] == 2:
                all_started.set()
        release.wait(WAIT * 3)
        return "too late"

    try:
        ids = q2.enqueue_many([{"task": "block"}] * 2)
        worker = make_worker(q2, concurrency=2)
        r = running(worker)
        assert all_started.wait(WAIT)
        began = time.monotonic()
        r.stop(now=now)  # returns although both handlers are still blocked
        assert time.monotonic() - began < WAIT
        assert not release.is_set()
        rows = conn.execute("SELECT status::text, attempts, run_at <= now() FROM pgq.jobs ORDER BY id").fetchall()
        assert rows == [("retrying", 1, True)] * 2  # runnable again at once
        for job_id in ids:
            assert [e[:3] for e in executions(conn, job_id)] == [(1, "interrupted", "WorkerShutdown")]
        assert worker_status(conn, worker.id) == "stopped"
        assert conn.execute("SELECT count(*) FROM pgq.jobs WHERE status = 'running'").fetchone() == (0,)
        # A completion from the interrupted attempt is fenced off.
        assert Queries("pgq").complete_jobs(conn, worker.id, ids, [1, 1], ['"late"', '"late"']) == set()
    finally:
        release.set()
        q2.close()


# ---------------------------------------------------------------- LISTEN / NOTIFY


def listening_worker(q: pgq.Queue, running: Callable[..., Running],
                     notes: list[tuple[str, str]]) -> tuple[pgq.Worker, Running]:
    worker = make_worker(q)
    original = worker._on_notify

    def record(channel: str, payload: str) -> None:
        notes.append((channel, payload))
        original(channel, payload)

    worker._on_notify = record  # type: ignore[method-assign]
    r = running(worker)
    eventually(lambda: worker._listener is not None and worker._listener.connected.is_set(), "LISTEN")
    return worker, r


def test_notify_wakes_an_idle_worker_long_before_the_poll_interval(
    settings: pgq.Settings, conn: psycopg.Connection[Any], running: Callable[..., Running],
) -> None:
    with pgq.connect(settings=settings.replace(poll_interval_seconds=30)) as q:
        ran = threading.Event()

        @q.task(name="ping")
        def ping() -> None:
            ran.set()

        notes: list[tuple[str, str]] = []
        worker, r = listening_worker(q, running, notes)
        began = time.monotonic()
        job_id = q.enqueue("ping")
        assert ran.wait(WAIT), "the job was not picked up within 10 s (poll interval 30 s)"
        assert time.monotonic() - began < WAIT
        assert ("pgq_job_available", "default") in notes
        r.stop()
        assert q.get(job_id).status is pgq.JobStatus.COMPLETED


def test_listener_reconnects_after_its_connection_is_killed(
    settings: pgq.Settings, conn: psycopg.Connection[Any], running: Callable[..., Running],
) -> None:
    with pgq.connect(settings=settings.replace(poll_interval_seconds=30)) as q:
        ran = threading.Event()

        @q.task(name="ping")
        def ping() -> None:
            ran.set()

        notes: list[tuple[str, str]] = []
        worker, r = listening_worker(q, running, notes)
        listener = worker._listener
        assert listener is not None
        old_pid = listener.backend_pid()
        assert old_pid is not None
        assert conn.execute("SELECT pg_terminate_backend(%s)", (old_pid,)).fetchone() == (True,)
        eventually(lambda: listener.reconnects >= 1 and listener.connected.is_set()
                   and listener.backend_pid() not in (None, old_pid), "the listener to reconnect")
        new_pid = listener.backend_pid()
        assert conn.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", (new_pid,)).fetchone() is not None
        job_id = q.enqueue("ping")
        assert ran.wait(WAIT), "a job enqueued after the reconnect was not picked up"
        assert ("pgq_job_available", "default") in notes
        r.stop()
        assert q.get(job_id).status is pgq.JobStatus.COMPLETED


# ---------------------------------------------------------------- maintenance


@pytest.fixture
def maintained(short: pgq.Settings) -> Iterator[tuple[pgq.Queue, pgq.Maintenance]]:
    # Workers registered by the test must not go stale while it runs.
    settings = short.replace(heartbeat_interval_seconds=1, stale_after_seconds=60, job_retention_seconds=3600)
    with pgq.connect(settings=settings) as q:
        yield q, pgq.Maintenance(settings, q.pool, q.queries)


def claim_with_new_worker(conn: psycopg.Connection[Any], count: int = 1) -> tuple[uuid.UUID, list[pgq.Job]]:
    queries = Queries("pgq")
    worker_id = uuid.uuid4()
    queries.register_worker(conn, worker_id, "elsewhere", 99, ["default"], 4, "{}")
    return worker_id, queries.get_runnable_jobs(conn, ["default"], worker_id, count)


def test_maintenance_rescues_the_jobs_of_a_stale_worker(maintained: tuple[pgq.Queue, pgq.Maintenance],
                                                        conn: psycopg.Connection[Any]) -> None:
    q, maintenance = maintained

    @q.task(name="work")
    def work() -> str:
        return "done on the second attempt"

    job_id = q.enqueue("work")
    dead_worker, [job] = claim_with_new_worker(conn)
    assert maintenance.run_once().rescued_job_ids == []  # heartbeat is fresh: nothing to do
    conn.execute("UPDATE pgq.workers SET last_heartbeat = now() - interval '10 minutes' WHERE id = %s",
                 (dead_worker,))
    report = maintenance.run_once()
    assert report.leader is True
    assert report.rescued_job_ids == [job_id]
    assert worker_status(conn, dead_worker) == "stale"
    assert (status(conn, job_id), q.get(job_id).attempts) == ("retrying", 1)
    assert [e[:2] for e in executions(conn, job_id)] == [(1, "lost")]
    # Runnable at once, and it completes on a live worker.
    assert make_worker(q).run_once() == 1
    assert q.wait(job_id, timeout=WAIT) == "done on the second attempt"
    assert [e[:2] for e in executions(conn, job_id)] == [(1, "lost"), (2, "completed")]


def test_maintenance_fails_jobs_past_their_timeout(maintained: tuple[pgq.Queue, pgq.Maintenance],
                                                   conn: psycopg.Connection[Any]) -> None:
    q, maintenance = maintained
    with pgq.connect(settings=q.settings, strict_tasks=False) as producer:
        slow = producer.enqueue("slow", timeout=5, max_attempts=3)
        untimed = producer.enqueue("untimed")
    stuck_worker, jobs = claim_with_new_worker(conn, 2)
    assert sorted(j.id for j in jobs) == [slow, untimed]
    assert maintenance.run_once().timed_out == []  # started just now
    conn.execute("UPDATE pgq.jobs SET started_at = now() - interval '1 hour' WHERE status = 'running'")
    report = maintenance.run_once()
    assert [(r.job_id, r.worker_id, r.status) for r in report.timed_out] == [(slow, stuck_worker, "retrying")]
    assert report.rescued_job_ids == []  # the worker itself is alive
    assert [e[:3] for e in executions(conn, slow)] == [(1, "timed_out", "JobTimeout")]
    assert status(conn, untimed) == "running"  # no timeout, never timed out
    # The stuck worker's late completion of the timed-out attempt is rejected.
    assert Queries("pgq").complete_jobs(conn, stuck_worker, [slow], [1], ['"late"']) == set()
    assert status(conn, slow) == "retrying"


def test_maintenance_prunes_old_finished_jobs_only(maintained: tuple[pgq.Queue, pgq.Maintenance],
                                                   conn: psycopg.Connection[Any]) -> None:
    q, maintenance = maintained

    @q.task(name="ok")
    def ok() -> None: ...

    @q.task(name="fatal", max_attempts=1)
    def fatal() -> None:
        raise pgq.Fatal("no")

    old_done, old_dead, recent_done = q.enqueue("ok"), q.enqueue("fatal"), q.enqueue("ok")
    assert make_worker(q).run_once() == 3
    old_cancelled, live = q.enqueue("ok", delay=3600), q.enqueue("ok", delay=3600)
    q.cancel(old_cancelled)
    conn.execute("UPDATE pgq.jobs SET finished_at = now() - interval '2 days' WHERE id = ANY(%s)",
                 ([old_done, old_dead, old_cancelled],))
    report = maintenance.run_once()
    assert report.pruned == 2
    remaining = [r[0] for r in conn.execute("SELECT id FROM pgq.jobs ORDER BY id").fetchall()]
    assert remaining == sorted([old_dead, recent_done, live])  # dead jobs wait for purge_dead
    assert conn.execute("SELECT count(*) FROM pgq.job_executions WHERE job_id = ANY(%s)",
                        ([old_done, old_cancelled],)).fetchone() == (0,)
    assert maintenance.run_once().pruned == 0


def test_only_one_caller_runs_maintenance_at_a_time(maintained: tuple[pgq.Queue, pgq.Maintenance],
                                                    conn: psycopg.Connection[Any], connect: Any) -> None:
    q, maintenance = maintained
    with pgq.connect(settings=q.settings, strict_tasks=False) as producer:
        job_id = producer.enqueue("anything")
    dead_worker, _ = claim_with_new_worker(conn)
    conn.execute("UPDATE pgq.workers SET last_heartbeat = now() - interval '10 minutes' WHERE id = %s",
                 (dead_worker,))
    other = connect(autocommit=False)
    other.execute("SELECT pg_advisory_xact_lock(hashtext('pgq-maintenance:pgq'))")  # another leader, mid-round
    report = maintenance.run_once()
    assert report == pgq.MaintenanceReport(leader=False)
    assert status(conn, job_id) == "running"  # untouched
    other.rollback()
    assert maintenance.run_once().rescued_job_ids == [job_id]


@pytest.mark.parametrize("claims_in_flight", [1, 2])
def test_a_busy_worker_keeps_claims_in_flight(
        short: pgq.Settings, conn: psycopg.Connection[Any], claims_in_flight: int) -> None:
    """With room for more jobs, the next claim goes out while one is still in the
    database (``claims_in_flight``; one at a time in Redis mode, where a pop
    records one batch per worker); every job still runs exactly once."""
    q = pgq.Queue(short.replace(claims_in_flight=claims_in_flight), strict_tasks=False)
    expected = 1 if short.redis_url else claims_in_flight
    seen: list[int] = []
    lock = threading.Lock()

    @q.task(name="note")
    def note(n: int) -> None:
        with lock:
            seen.append(n)

    q.enqueue_many([{"task": "note", "payload": {"n": n}} for n in range(60)])
    worker = make_worker(q, concurrency=8, batch_size=2)
    real = worker._claims.claim
    state = {"now": 0, "most": 0}
    second = threading.Event()

    def claim(n: int, *, thorough: bool = False) -> Any:
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
            if state["now"] == 2:
                second.set()
        try:
            if expected > 1:
                second.wait(5)  # hold the first claim until a second one is in flight
            return real(n, thorough=thorough)
        finally:
            with lock:
                state["now"] -= 1

    worker._claims.claim = claim  # type: ignore[method-assign]
    try:
        worker.run(burst=True)
    finally:
        q.close()
    assert sorted(seen) == list(range(60))
    assert state["most"] == expected
    done = conn.execute("SELECT count(*) FROM pgq.jobs WHERE status = 'completed'").fetchone()
    assert done == (60,)


def test_burst_returns_when_the_last_job_is_done_not_at_the_next_poll(short: pgq.Settings) -> None:
    """Two claims in flight end the queue together: the jobs of the one that comes
    back first may all be done before the loop asks to hear of the last one. The
    worker must notice that itself instead of sleeping until the poll."""
    q = pgq.Queue(short.replace(poll_interval_seconds=60.0), strict_tasks=False)

    @q.task(name="noop")
    def noop() -> None:
        return None

    try:
        for _ in range(5):
            q.enqueue_many([{"task": "noop"}] * 2000)
            worker = make_worker(q, concurrency=16, batch_size=100)
            began = time.monotonic()
            worker.run(burst=True)
            assert worker.counters.completed == 2000
            assert time.monotonic() - began < 30.0  # far from the 60 s poll
    finally:
        q.close()
