"""pgq.testing, the kit for users' tests: run_until_empty, enqueued/assert_enqueued, the clock.

These tests use the kit's own pytest fixtures (``pgq_queue``, ``pgq_clock``,
``pgq_db_url``), as a user's suite would. Tasks get backoffs of a minute or
more so that a retry never falls due in real time while a test runs: only the
clock makes it due.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import psycopg
import pytest

import factories
import pgq
from pgq.testing import QueueClock, RunLimitExceeded, assert_enqueued, enqueued, run_until_empty, use_database

pytestmark = pytest.mark.integration

SLOW_RETRY = pgq.Backoff(base=60.0, factor=2.0, max=600.0, jitter=0.1)  # first retry due in 54-66 s


def test_run_until_empty_runs_due_jobs_and_children_and_leaves_delayed_ones(pgq_queue: pgq.Queue) -> None:
    seen: list[str] = []

    @pgq_queue.task(name="greet")
    def greet(who: str) -> str:
        seen.append(who)
        return f"hello {who}"

    parent = pgq_queue.enqueue("greet", {"who": "parent"})
    child = pgq_queue.enqueue("greet", {"who": "child"}, depends_on=[parent])
    later = pgq_queue.enqueue("greet", {"who": "later"}, delay=3600)

    result = run_until_empty(pgq_queue)

    assert result.ran == [parent, child] and result.completed == [parent, child]
    assert result.results == {parent: "hello parent", child: "hello child"}
    assert seen == ["parent", "child"]
    assert [a.outcome for a in result.attempts] == ["completed", "completed"]
    assert pgq_queue.get(later).status is pgq.JobStatus.QUEUED
    assert run_until_empty(pgq_queue).ran == []  # nothing due: nothing runs


def test_a_retry_waits_for_the_clock_then_completes(pgq_queue: pgq.Queue, pgq_clock: QueueClock) -> None:
    calls: list[int] = []

    @pgq_queue.task(name="flaky", retry=SLOW_RETRY, max_attempts=3)
    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("smtp down")
        return "sent"

    job_id = pgq_queue.enqueue("flaky")
    first = run_until_empty(pgq_queue)
    assert first.retrying == [job_id] and first.completed == []
    (failure,) = first.failed
    assert (failure.job_id, failure.attempt, failure.outcome, failure.error_type) == (job_id, 1, "failed", "ConnectionError")
    assert "smtp down" in (failure.error_message or "")

    pgq_clock.advance(30)  # not yet: the backoff is at least 54 s
    assert run_until_empty(pgq_queue).ran == []
    pgq_clock.advance(dt.timedelta(seconds=40))
    second = run_until_empty(pgq_queue)
    assert second.completed == [job_id] and second.results == {job_id: "sent"}
    assert pgq_clock.advanced == dt.timedelta(seconds=70)


def test_a_job_out_of_attempts_is_dead_and_raise_for_failures_shows_the_traceback(pgq_queue: pgq.Queue) -> None:
    @pgq_queue.task(name="broken", max_attempts=1)
    def broken() -> None:
        raise ValueError("bad row 7")

    job_id = pgq_queue.enqueue("broken")
    result = run_until_empty(pgq_queue)
    assert result.dead == [job_id] and [d.job_id for d in pgq_queue.dead_letters()] == [job_id]
    with pytest.raises(AssertionError, match=r"(?s)job \d+ \(broken\) attempt 1 failed: ValueError: bad row 7.*Traceback"):
        result.raise_for_failures()


def test_a_delayed_job_becomes_due_when_the_clock_reaches_it(pgq_queue: pgq.Queue, pgq_clock: QueueClock) -> None:
    @pgq_queue.task(name="remind")
    def remind() -> None: ...

    job_id = pgq_queue.enqueue("remind", delay=3600)
    pgq_clock.advance(3000)
    assert run_until_empty(pgq_queue).ran == []
    pgq_clock.advance(700)
    assert run_until_empty(pgq_queue).completed == [job_id]


def test_advancing_keeps_the_claim_order_of_due_and_delayed_jobs(pgq_queue: pgq.Queue, pgq_clock: QueueClock) -> None:
    # A job due now was due before one delayed by 30 minutes: after an hour passes both
    # are due, and the older runs first. Moving only the future run_at values back
    # would put the delayed one 30 minutes in the past, before the other.
    @pgq_queue.task(name="step")
    def step() -> None: ...

    now_job = pgq_queue.enqueue("step")
    delayed = pgq_queue.enqueue("step", delay=1800)
    pgq_clock.advance(3600)
    assert run_until_empty(pgq_queue).ran == [now_job, delayed]


def test_advancing_moves_every_timestamp_of_the_schema_but_the_workers(pgq_queue: pgq.Queue, pgq_clock: QueueClock,
                                                      pgq_db_url: str) -> None:
    @pgq_queue.task(name="step")
    def step() -> None: ...

    job_id = pgq_queue.enqueue("step", delay=600)
    run_until_empty(pgq_queue)  # registers (and deregisters) a worker: a row with timestamps
    jobs = "SELECT run_at, created_at, updated_at FROM pgq.jobs WHERE id = %s"
    workers = "SELECT started_at, last_heartbeat FROM pgq.workers"
    with psycopg.connect(pgq_db_url, autocommit=True) as conn:
        job_before, worker_before = conn.execute(jobs, [job_id]).fetchone(), conn.execute(workers).fetchone()
        pgq_clock.advance(900)
        job_after, worker_after = conn.execute(jobs, [job_id]).fetchone(), conn.execute(workers).fetchone()
    assert job_before and job_after and worker_before and worker_after
    shift = dt.timedelta(seconds=900)
    assert [b - a for a, b in zip(job_after, job_before, strict=True)] == [shift] * 3
    assert worker_after == worker_before  # a worker lives in real time: the clock never makes it stale
    # Enqueued with a 600 s delay, that is still what it was: created_at moved with run_at.
    assert_enqueued(pgq_queue, "step", delay=600, count=1)


def test_an_advance_wakes_a_listening_worker_without_waiting_for_its_poll(pgq_settings: pgq.Settings) -> None:
    # The worker polls every 300 s and would sleep until the job's run_at (an hour away):
    # only the NOTIFY sent with the advance can wake it within the test's bound.
    with pgq.Queue(pgq_settings.replace(poll_interval_seconds=300.0)) as q:
        ran = threading.Event()

        @q.task(name="remind")
        def remind() -> None:
            ran.set()

        job_id = q.enqueue("remind", delay=3600)
        worker = q.worker(concurrency=1, install_signal_handlers=False, run_maintenance=False)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            factories.eventually(lambda: worker.started, "the worker to start")
            QueueClock(q).advance(3600)
            assert ran.wait(60), "the advance did not wake the worker"
            factories.eventually(lambda: q.get(job_id).status is pgq.JobStatus.COMPLETED, "the outcome")
        finally:
            worker.stop(now=True)
            thread.join(30)


def test_a_periodic_task_ticks_when_the_clock_reaches_its_ticks(pgq_queue: pgq.Queue, pgq_clock: QueueClock) -> None:
    ran: list[int] = []

    @pgq_queue.periodic("0 3 * * *", name="nightly", catch_up="all")
    def nightly() -> None:
        ran.append(1)

    assert run_until_empty(pgq_queue).ran == []  # stored, next tick at 03:00
    moved = pgq_clock.advance_to_next_tick("nightly")
    assert dt.timedelta(0) < moved <= dt.timedelta(days=1)
    assert len(run_until_empty(pgq_queue).completed) == 1
    pgq_clock.advance(dt.timedelta(days=1))
    assert len(run_until_empty(pgq_queue).completed) == 1
    pgq_clock.advance(dt.timedelta(days=3))  # catch_up="all": one job per missed tick
    assert len(run_until_empty(pgq_queue).completed) == 3
    assert len(ran) == 5 and len(enqueued(pgq_queue, "nightly", status="completed")) == 5


def test_run_until_empty_stops_a_task_that_enqueues_itself(pgq_queue: pgq.Queue) -> None:
    @pgq_queue.task(name="forever")
    def forever() -> None:
        pgq_queue.enqueue("forever")

    pgq_queue.enqueue("forever")
    with pytest.raises(RunLimitExceeded, match="max_jobs=5") as raised:
        run_until_empty(pgq_queue, max_jobs=5)
    assert len(raised.value.result.completed) == 6  # the cap, and the one attempt that showed more were due
    assert isinstance(raised.value, pgq.PgqError)


def test_run_until_empty_deregisters_its_worker_and_ends_its_threads(pgq_queue: pgq.Queue, pgq_db_url: str) -> None:
    @pgq_queue.task(name="step")
    def step() -> None: ...

    pgq_queue.enqueue("step")
    before = set(threading.enumerate())  # other tests' workers may have left threads of their own
    run_until_empty(pgq_queue, concurrency=3)
    with psycopg.connect(pgq_db_url, autocommit=True) as conn:
        assert conn.execute("SELECT status::text FROM pgq.workers").fetchall() == [("stopped",)]
    for thread in [t for t in threading.enumerate() if t not in before and t.name.startswith("pgq-job-")]:
        thread.join(timeout=10)
        assert not thread.is_alive(), "a runner thread of run_until_empty's worker outlived it"


def test_enqueued_filters_on_every_option_and_the_assert_says_what_differs(pgq_queue: pgq.Queue) -> None:
    @pgq_queue.task(name="mail.send", queue="emails")
    def send(to: str) -> None: ...

    parent = pgq_queue.enqueue("mail.send", {"to": "a@b.c"}, priority=5, unique_key="welcome:1")
    child = pgq_queue.enqueue(send, {"to": "d@e.f", "cc": ["x@y.z"]}, depends_on=[parent], delay=90, timeout=30,
                              max_attempts=7, group_key="tenant-1")

    assert [j.id for j in enqueued(pgq_queue, send)] == [parent, child]
    assert [j.id for j in enqueued(pgq_queue, "mail.send", {"to": "a@b.c"}, priority=5, queue="emails",
                                   unique_key="welcome:1", status="queued")] == [parent]
    (job,) = assert_enqueued(pgq_queue, send, payload_includes={"to": "d@e.f"}, depends_on=[parent], delay=90,
                             timeout=30, max_attempts=7, group_key="tenant-1", status=pgq.JobStatus.WAITING)
    assert (job.id, job.payload, job.depends_on) == (child, {"to": "d@e.f", "cc": ["x@y.z"]}, (parent,))
    assert enqueued(pgq_queue, queue="default") == []
    assert_enqueued(pgq_queue, "mail.send", {"to": "nobody"}, count=0)

    with pytest.raises(AssertionError) as raised:
        assert_enqueued(pgq_queue, "mail.send", {"to": "a@b.c"}, priority=3)
    message = str(raised.value)
    assert message.startswith("expected at least 1 job(s) with task='mail.send', payload={'to': 'a@b.c'}, priority=3; found 0")
    assert f"job {parent}: task='mail.send' queue='emails' payload={{\"to\": \"a@b.c\"}} priority=5" in message
    assert "<- differs in priority\n" in message and "<- differs in payload, priority" in message
    with pytest.raises(AssertionError, match="expected exactly 1 .* found 2"):
        assert_enqueued(pgq_queue, "mail.send", count=1)
    with pytest.raises(AssertionError, match="candidates \\(every job enqueued"):
        assert_enqueued(pgq_queue, "other.task")


@pytest.mark.parametrize(("call", "message"), [
    (lambda q: run_until_empty(q, max_jobs=0), "max_jobs"),
    (lambda q: run_until_empty(q, concurrency=0), "concurrency"),
    (lambda q: run_until_empty(q, periodic="yes"), "periodic"),
    (lambda q: enqueued(q, priority=9), "priority"),
    (lambda q: enqueued(q, payload=["not", "a", "dict"]), "payload"),
    (lambda q: enqueued(q, payload={"when": object()}), "JSON"),
    (lambda q: enqueued(q, status="finished"), "status"),
    (lambda q: enqueued(q, depends_on="12"), "depends_on"),
    (lambda q: enqueued(q, delay=-1), "delay"),
    (lambda q: enqueued(q, colour="red"), "colour"),
    (lambda q: enqueued("not a queue"), "pgq.Queue"),
    (lambda q: assert_enqueued(q, count=-1), "count"),
    (lambda q: QueueClock(q).advance(-1), "by"),
    (lambda q: QueueClock(q).advance(dt.timedelta(seconds=-1)), "forward"),
    (lambda q: QueueClock(q).advance(float("nan")), "by"),
    (lambda q: QueueClock(q).advance(True), "by"),
    (lambda q: QueueClock(q).advance(dt.timedelta(days=366 * 101)), "100"),
    (lambda q: QueueClock(q).advance_to_next_tick("no-such-schedule"), "no-such-schedule"),
    (lambda q: QueueClock("not a queue"), "pgq.Queue"),  # type: ignore[arg-type]
    (lambda q: use_database(q, "").__enter__(), "database_url"),
])
def test_bad_input_to_the_kit_is_a_validation_error_and_changes_nothing(
    pgq_queue: pgq.Queue, pgq_db_url: str, call: Any, message: str,
) -> None:
    @pgq_queue.task(name="step", retry=SLOW_RETRY)
    def step() -> None:
        raise ConnectionError("down")

    pgq_queue.enqueue("step", delay=60)
    pgq_queue.enqueue("step")
    with psycopg.connect(pgq_db_url, autocommit=True) as conn:
        before = factories.snapshot(conn)
        with pytest.raises(pgq.ValidationError, match=message):
            call(pgq_queue)
        assert factories.snapshot(conn) == before
    assert pgq_queue.settings.database_url == pgq_db_url


def test_use_database_points_an_application_queue_at_the_test_database_and_back(pgq_db_url: str) -> None:
    app = pgq.connect("postgresql://app@db.invalid/app", redis_url="redis://cache.invalid:6379/0", schema="pgq")

    @app.task(name="welcome")
    def welcome(user_id: int) -> int:
        return user_id

    with use_database(app, pgq_db_url) as q:
        assert q is app and app.settings.redis_url is None
        job_id = welcome.defer(user_id=42)
        assert run_until_empty(app).results == {job_id: 42}
    assert app.settings.database_url == "postgresql://app@db.invalid/app"
    assert app.settings.redis_url == "redis://cache.invalid:6379/0"
