"""The producer API end to end against Postgres: enqueue, enqueue_many, get,
cancel, dead letters, requeue, purge, stats, wait, unique keys, transactional
enqueue, and the rule that bad input raises a clear error and writes nothing."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import traceback
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy

import pgq
from factories import eventually
from pgq.migrate import downgrade, head_revision

pytestmark = [pytest.mark.integration, pytest.mark.both_modes]

UTC = dt.UTC


@pytest.fixture
def q(short: pgq.Settings) -> Iterator[pgq.Queue]:
    queue = pgq.connect(settings=short)

    @queue.task(name="emails.send", queue="emails", priority=4, max_attempts=5, timeout=30,
                retry=pgq.Backoff(base=2, factor=3, max=100, jitter=0))
    def send(to: str, body: str = "") -> dict[str, str]:
        return {"sent_to": to}

    @queue.task(name="reports.build")
    def build(n: int = 0) -> int:
        return n * 2

    @queue.task(name="always.fatal", max_attempts=3)
    def fatal() -> None:
        raise pgq.Fatal("cannot ever work")

    yield queue
    queue.close()


def jobs_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM pgq.jobs").fetchone()
    assert row is not None
    return int(row[0])


def run_once(q: pgq.Queue, queues: list[str] | None = None) -> int:
    worker = q.worker(queues=queues or ["default", "emails"], install_signal_handlers=False, run_maintenance=False)
    return worker.run_once()


def make_dead(q: pgq.Queue) -> int:
    job_id = q.enqueue("always.fatal")
    assert run_once(q) == 1
    assert q.get(job_id).status is pgq.JobStatus.DEAD
    return job_id


# ---------------------------------------------------------------- enqueue


def test_enqueue_stores_the_job_with_the_task_defaults(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    job_id = q.enqueue("emails.send", {"to": "a@b.c"})
    job = q.get(job_id)
    assert job.id == job_id
    assert (job.task, job.queue, job.priority, job.max_attempts) == ("emails.send", "emails", 4, 5)
    assert job.status is pgq.JobStatus.QUEUED
    assert job.payload == {"to": "a@b.c"}
    assert job.attempts == 0 and job.worker_id is None and job.result is None
    assert job.timeout_seconds == 30
    assert job.run_at == job.created_at  # due at once, by the database clock
    row = conn.execute("SELECT retry_base_seconds, retry_factor, retry_max_seconds, retry_jitter FROM pgq.jobs"
                       " WHERE id = %s", (job_id,)).fetchone()
    assert row == (2.0, 3.0, 100.0, 0.0)


def test_enqueue_options_override_the_task_defaults(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    job_id = q.enqueue("emails.send", {"to": "x"}, queue="bulk", priority=1, max_attempts=2, timeout=None,
                       retry=pgq.Backoff(base=5, factor=1, max=5, jitter=0.5), unique_key="k1")
    job = q.get(job_id)
    assert (job.queue, job.priority, job.max_attempts, job.timeout, job.unique_key) == ("bulk", 1, 2, None, "k1")
    row = conn.execute("SELECT retry_base_seconds, retry_factor, retry_max_seconds, retry_jitter FROM pgq.jobs"
                       " WHERE id = %s", (job_id,)).fetchone()
    assert row == (5.0, 1.0, 5.0, 0.5)


def test_job_of_a_task_without_backoff_uses_the_database_defaults(q: pgq.Queue,
                                                                 conn: psycopg.Connection[Any]) -> None:
    job_id = q.enqueue("reports.build", {"n": 1})
    row = conn.execute("SELECT retry_base_seconds, retry_factor, retry_max_seconds, retry_jitter, queue, priority"
                       " FROM pgq.jobs WHERE id = %s", (job_id,)).fetchone()
    assert row == (None, None, None, None, "default", 3)


def test_delay_is_added_by_the_database_clock(q: pgq.Queue) -> None:
    delayed = q.enqueue("reports.build", {}, delay=90)
    job = q.get(delayed)
    assert job.run_at - job.created_at == dt.timedelta(seconds=90)
    td = q.get(q.enqueue("reports.build", {}, delay=dt.timedelta(minutes=2, milliseconds=500)))
    assert td.run_at - td.created_at == dt.timedelta(seconds=120.5)


def test_run_at_is_stored_exactly(q: pgq.Queue) -> None:
    when = dt.datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    job = q.get(q.enqueue("reports.build", {}, run_at=when))
    assert job.run_at == when
    assert job.run_at.utcoffset() is not None


def test_delayed_job_is_not_claimed_before_it_is_due(q: pgq.Queue) -> None:
    job_id = q.enqueue("reports.build", {}, delay=3600)
    assert run_once(q) == 0
    assert q.get(job_id).status is pgq.JobStatus.QUEUED


def test_defer_and_task_enqueue(q: pgq.Queue) -> None:
    send = q.tasks["emails.send"]
    a = send.defer(to="a@b.c", body="hi")
    b = send.enqueue({"to": "b@b.c"}, priority=5)
    assert q.get(a).payload == {"to": "a@b.c", "body": "hi"}
    assert (q.get(b).payload, q.get(b).priority) == ({"to": "b@b.c"}, 5)
    assert send("direct") == {"sent_to": "direct"}  # calling a task runs it inline


def test_enqueue_accepts_a_task_object(q: pgq.Queue) -> None:
    job_id = q.enqueue(q.tasks["reports.build"], {"n": 2})
    assert q.get(job_id).task == "reports.build"


# ---------------------------------------------------------------- enqueue_many


def test_enqueue_many_returns_ids_in_input_order(q: pgq.Queue) -> None:
    send = q.tasks["emails.send"]
    items: list[Any] = [
        {"task": "reports.build", "payload": {"n": 1}},
        send.spec({"to": "one"}),
        {"task": "emails.send", "payload": {"to": "two"}, "priority": 1, "delay": 60},
        q.job_spec("reports.build", {"n": 4}, queue="other"),
    ]
    ids = q.enqueue_many(items)
    assert len(ids) == len(set(ids)) == 4
    jobs = [q.get(i) for i in ids]
    assert [j.task for j in jobs] == ["reports.build", "emails.send", "emails.send", "reports.build"]
    assert [j.payload for j in jobs] == [{"n": 1}, {"to": "one"}, {"to": "two"}, {"n": 4}]
    assert [j.queue for j in jobs] == ["default", "emails", "emails", "other"]
    assert jobs[2].priority == 1 and jobs[2].run_at - jobs[2].created_at == dt.timedelta(seconds=60)
    assert ids == sorted(ids)  # ids increase in enqueue order


def test_enqueue_many_of_a_thousand_jobs(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    ids = q.enqueue_many({"task": "reports.build", "payload": {"n": n}} for n in range(1000))
    assert len(set(ids)) == 1000
    rows = conn.execute("SELECT id, payload->>'n' FROM pgq.jobs ORDER BY id").fetchall()
    assert [(i, str(n)) for n, i in enumerate(ids)] == rows


def test_enqueue_many_of_nothing(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    assert q.enqueue_many([]) == []
    assert jobs_count(conn) == 0


BAD_ITEMS = [
    ({"payload": {"n": 1}}, "needs a 'task'"),
    ({"task": "reports.build", "priority": 9}, "priority"),
    ({"task": "reports.build", "payload": {"n": float("nan")}}, "payload"),
    ({"task": "reports.build", "bogus_option": 1}, "bogus_option"),
    ({"task": "no.such.task"}, "unknown task"),
    ("reports.build", "expected a JobSpec or a dict"),
]


def test_enqueue_many_with_one_bad_item_writes_nothing(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    q.enqueue("reports.build", {})
    before = jobs_count(conn)
    for bad_item, error in BAD_ITEMS:
        with pytest.raises(pgq.ValidationError) as info:
            q.enqueue_many([{"task": "reports.build", "payload": {"n": 0}}, bad_item,
                            {"task": "reports.build", "payload": {"n": 2}}])
        assert "job 1" in str(info.value), bad_item
        assert error in str(info.value), bad_item
        assert jobs_count(conn) == before, bad_item


def test_enqueue_many_repeating_a_unique_key_gives_one_job(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    ids = q.enqueue_many([
        {"task": "reports.build", "unique_key": "same"},
        {"task": "reports.build", "payload": {"n": 1}},
        {"task": "reports.build", "unique_key": "same"},
    ])
    assert ids[0] == ids[2] != ids[1]
    assert jobs_count(conn) == 2


# ---------------------------------------------------------------- unique keys


def test_unique_key_returns_the_existing_live_job(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    first = q.enqueue("reports.build", {"n": 1}, unique_key="welcome:42")
    second = q.enqueue("reports.build", {"n": 2}, unique_key="welcome:42")
    assert second == first
    assert jobs_count(conn) == 1
    assert q.get(first).payload == {"n": 1}  # the first one wins, untouched


def test_unique_key_with_on_duplicate_raise(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    first = q.enqueue("reports.build", {}, unique_key="welcome:42")
    with pytest.raises(pgq.DuplicateJob) as info:
        q.enqueue("reports.build", {}, unique_key="welcome:42", on_duplicate="raise")
    assert info.value.existing_job_id == first
    assert info.value.unique_key == "welcome:42"
    assert "welcome:42" in str(info.value)
    assert jobs_count(conn) == 1


def test_on_duplicate_must_be_return_or_raise(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(pgq.ValidationError, match="on_duplicate"):
        q.enqueue("reports.build", {}, unique_key="k", on_duplicate="ignore")  # type: ignore[arg-type]
    assert jobs_count(conn) == 0


def test_unique_key_is_free_again_once_the_job_finished(q: pgq.Queue) -> None:
    first = q.enqueue("reports.build", {}, unique_key="nightly")
    assert run_once(q) == 1
    assert q.get(first).status is pgq.JobStatus.COMPLETED
    second = q.enqueue("reports.build", {}, unique_key="nightly", on_duplicate="raise")
    assert second != first
    cancelled = q.enqueue("reports.build", {}, unique_key="other")
    q.cancel(cancelled)
    assert q.enqueue("reports.build", {}, unique_key="other") != cancelled


# ---------------------------------------------------------------- get / cancel


def test_get_unknown_job_raises_job_not_found(q: pgq.Queue) -> None:
    with pytest.raises(pgq.JobNotFound, match="123456"):
        q.get(123456)


def test_ids_are_validated_before_anything_is_sent() -> None:
    # Nothing listens on port 1: a validation error proves no connection was tried.
    offline = pgq.connect(settings=pgq.Settings(database_url="postgresql://nobody@127.0.0.1:1/none"))
    for job_id in (0, -1, True, "1", 2**63, None):
        for call in (offline.get, offline.cancel, offline.wait, lambda i: offline.requeue_dead([i])):
            with pytest.raises(pgq.ValidationError, match="job id"):
                call(job_id)


def test_cancel_a_queued_job(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    job_id = q.enqueue("reports.build", {})
    assert q.cancel(job_id) is True
    job = q.get(job_id)
    assert job.status is pgq.JobStatus.CANCELLED and job.finished_at is not None
    assert q.cancel(job_id) is False  # already cancelled
    assert run_once(q) == 0  # a cancelled job is never claimed
    # Cancelling a job that never started leaves no execution behind.
    assert conn.execute("SELECT count(*) FROM pgq.job_executions").fetchone() == (0,)


def test_cancel_refuses_finished_jobs_and_changes_nothing(q: pgq.Queue) -> None:
    done = q.enqueue("reports.build", {"n": 3})
    assert run_once(q) == 1
    dead = make_dead(q)
    for job_id, status in ((done, pgq.JobStatus.COMPLETED), (dead, pgq.JobStatus.DEAD)):
        before = q.get(job_id)
        with pytest.raises(pgq.InvalidTransition, match=status.value):
            q.cancel(job_id)
        assert q.get(job_id) == before


def test_cancel_unknown_job(q: pgq.Queue) -> None:
    with pytest.raises(pgq.JobNotFound):
        q.cancel(987654)


# ---------------------------------------------------------------- dead letters


def test_dead_letters_requeue_and_purge(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    dead = make_dead(q)
    letters = q.dead_letters()
    assert [d.job_id for d in letters] == [dead]
    letter = letters[0]
    assert (letter.queue, letter.task, letter.reason, letter.attempts) == ("default", "always.fatal", "fatal", 1)
    assert letter.last_error == "Fatal: cannot ever work"
    assert [(e["attempt"], e["outcome"], e["error_type"]) for e in letter.error_history] == [(1, "failed", "Fatal")]
    assert q.dead_letters(queue="emails") == []
    assert [d.job_id for d in q.dead_letters(queue="default")] == [dead]

    assert q.requeue_dead([dead]) == [dead]
    job = q.get(dead)
    assert (job.status, job.attempts, job.finished_at) == (pgq.JobStatus.QUEUED, 0, None)
    assert q.dead_letters() == []
    assert q.stats().dead_letters == 0

    # It dies again (the handler still raises Fatal) and is then purged for good.
    assert run_once(q) == 1
    assert q.get(dead).status is pgq.JobStatus.DEAD
    history = q.dead_letters()[0].error_history
    assert [e["attempt"] for e in history] == [1, 1]  # both lives, oldest first
    assert q.purge_dead([dead], older_than=3600) == []  # died just now: kept
    assert q.purge_dead([dead]) == [dead]
    with pytest.raises(pgq.JobNotFound):
        q.get(dead)
    for table in ("jobs", "job_executions", "dead_letter_queue"):
        assert conn.execute(f"SELECT count(*) FROM pgq.{table}").fetchone() == (0,), table


def test_requeued_dead_job_can_run_to_completion(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    flaky = {"fail": True}

    @q.task(name="flaky", max_attempts=1)
    def handler() -> str:
        if flaky["fail"]:
            raise RuntimeError("first life fails")
        return "second life works"

    job_id = q.enqueue("flaky")
    assert run_once(q) == 1
    assert q.get(job_id).status is pgq.JobStatus.DEAD
    flaky["fail"] = False
    assert q.requeue_dead([job_id]) == [job_id]
    assert run_once(q) == 1
    assert q.wait(job_id, timeout=10) == "second life works"
    rows = conn.execute("SELECT attempt, outcome::text FROM pgq.job_executions WHERE job_id = %s ORDER BY id",
                        (job_id,)).fetchall()
    assert rows == [(1, "failed"), (1, "completed")]


def test_requeue_of_a_job_that_is_not_dead_changes_nothing(q: pgq.Queue) -> None:
    dead = make_dead(q)
    queued = q.enqueue("reports.build", {})
    with pytest.raises(pgq.InvalidTransition, match=str(queued)):
        q.requeue_dead([dead, queued])
    assert q.get(dead).status is pgq.JobStatus.DEAD
    assert [d.job_id for d in q.dead_letters()] == [dead]
    with pytest.raises(pgq.JobNotFound):
        q.requeue_dead([dead, 999_999])
    assert q.get(dead).status is pgq.JobStatus.DEAD


def test_requeue_every_dead_job_of_a_queue(q: pgq.Queue) -> None:
    a = make_dead(q)
    b = q.enqueue("always.fatal", queue="emails")
    assert run_once(q) == 1
    assert q.requeue_dead(queue="emails") == [b]
    assert (q.get(a).status, q.get(b).status) == (pgq.JobStatus.DEAD, pgq.JobStatus.QUEUED)
    assert q.requeue_dead() == [a]


def test_dead_letter_arguments_are_validated(q: pgq.Queue) -> None:
    with pytest.raises(pgq.ValidationError, match="limit"):
        q.dead_letters(limit=0)
    with pytest.raises(pgq.ValidationError, match="queue"):
        q.dead_letters(queue="no spaces")
    with pytest.raises(pgq.ValidationError, match="older_than"):
        q.purge_dead(older_than=-1)
    with pytest.raises(pgq.ValidationError, match="job id"):
        q.requeue_dead([0])


# ---------------------------------------------------------------- stats


def test_stats_count_jobs_per_queue_and_status(q: pgq.Queue) -> None:
    make_dead(q)
    q.enqueue_many([{"task": "reports.build"}] * 3)
    q.enqueue("emails.send", {"to": "x"}, priority=5)
    q.enqueue("reports.build", {}, delay=3600)
    stats = q.stats()
    assert stats.count(queue="default", status="queued") == 4
    assert stats.count(queue="emails") == 1
    assert stats.count(status="dead") == 1
    assert stats.count() == 6
    assert stats.dead_letters == 1
    assert {(r.queue, r.priority) for r in stats.depth if r.status == "queued"} == {("default", 3), ("emails", 5)}
    due = {r.queue: r.due for r in stats.depth if r.status == "queued"}
    assert due == {"default": 3, "emails": 1}  # the delayed job is not due
    age = stats.oldest_due_age()
    assert age is not None and age >= 0
    assert json.dumps(stats.to_dict())  # serialisable for `pgq status --json`


# ---------------------------------------------------------------- wait


def test_wait_returns_the_result(q: pgq.Queue) -> None:
    job_id = q.enqueue("emails.send", {"to": "a@b.c"})
    assert run_once(q) == 1
    assert q.wait(job_id, timeout=10) == {"sent_to": "a@b.c"}


def test_wait_times_out_on_a_job_nobody_runs(q: pgq.Queue) -> None:
    job_id = q.enqueue("reports.build", {})
    with pytest.raises(pgq.WaitTimeout, match="queued"):
        q.wait(job_id, timeout=0)
    with pytest.raises(TimeoutError):  # WaitTimeout is also a TimeoutError
        q.wait(job_id, timeout=0.05)


def test_wait_raises_job_failed_for_dead_and_cancelled_jobs(q: pgq.Queue) -> None:
    dead = make_dead(q)
    with pytest.raises(pgq.JobFailed) as info:
        q.wait(dead, timeout=5)
    assert (info.value.job_id, info.value.status, info.value.last_error) == (dead, "dead", "Fatal: cannot ever work")
    cancelled = q.enqueue("reports.build", {})
    q.cancel(cancelled)
    with pytest.raises(pgq.JobFailed, match="cancelled"):
        q.wait(cancelled, timeout=5)
    with pytest.raises(pgq.JobNotFound):
        q.wait(4242, timeout=5)


# ---------------------------------------------------------------- transactional enqueue


@pytest.fixture
def engine(db_url: str) -> Iterator[sqlalchemy.Engine]:
    # db_url may be a URL or a key=value DSN: let psycopg parse it.
    eng = sqlalchemy.create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(db_url))
    yield eng
    eng.dispose()


def test_transactional_enqueue_rolled_back_leaves_no_job(q: pgq.Queue, engine: sqlalchemy.Engine,
                                                         conn: psycopg.Connection[Any]) -> None:
    with engine.connect() as sa:
        tx = sa.begin()
        job_id = q.enqueue("reports.build", {"n": 1}, connection=sa)
        sa.execute(sqlalchemy.text("SELECT 1"))  # the caller's own work in the same transaction
        assert jobs_count(conn) == 0  # not visible outside the transaction
        tx.rollback()
    assert jobs_count(conn) == 0
    with pytest.raises(pgq.JobNotFound):
        q.get(job_id)


def test_transactional_enqueue_committed_is_a_job(q: pgq.Queue, engine: sqlalchemy.Engine,
                                                  conn: psycopg.Connection[Any]) -> None:
    with engine.begin() as sa:
        sa.execute(sqlalchemy.text("CREATE TABLE orders (id int)"))
        sa.execute(sqlalchemy.text("INSERT INTO orders VALUES (1)"))
        job_id = q.enqueue("emails.send", {"to": "buyer"}, connection=sa)
        many = q.enqueue_many([{"task": "reports.build"}, {"task": "reports.build"}], connection=sa)
        assert q.get(job_id, connection=sa).status is pgq.JobStatus.QUEUED  # visible inside
        assert jobs_count(conn) == 0
    assert jobs_count(conn) == 3
    assert q.get(job_id).payload == {"to": "buyer"}
    assert [q.get(i).task for i in many] == ["reports.build", "reports.build"]
    assert conn.execute("SELECT count(*) FROM orders").fetchone() == (1,)


def test_transactional_enqueue_on_a_psycopg_connection(q: pgq.Queue, db_url: str,
                                                       conn: psycopg.Connection[Any]) -> None:
    with psycopg.connect(db_url) as own:  # not autocommit: a transaction is open
        job_id = q.enqueue("reports.build", {}, connection=own)
        own.rollback()
        assert jobs_count(conn) == 0
        kept = q.enqueue("reports.build", {}, connection=own)
        own.commit()
    assert jobs_count(conn) == 1
    assert q.get(kept).status is pgq.JobStatus.QUEUED
    assert kept != job_id


def test_connection_of_an_unknown_kind_is_refused(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(pgq.ValidationError, match="connection="):
        q.enqueue("reports.build", {}, connection=object())
    assert jobs_count(conn) == 0


# ---------------------------------------------------------------- bad input changes nothing


def test_strict_tasks_rejects_unknown_tasks(q: pgq.Queue, short: pgq.Settings,
                                            conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(pgq.UnknownTask) as info:
        q.enqueue("billing.charge", {"amount": 3})
    assert "billing.charge" in str(info.value)
    assert "strict_tasks=False" in str(info.value)
    assert isinstance(info.value, pgq.ValidationError)
    assert jobs_count(conn) == 0
    with pgq.connect(settings=short, strict_tasks=False) as loose:
        job_id = loose.enqueue("billing.charge", {"amount": 3})
        assert loose.get(job_id).task == "billing.charge"


BAD_ENQUEUE_ARGUMENTS = [
    ({"payload": {"to": "x"}, "priority": 9}, "priority"),
    ({"payload": {"to": "x"}, "priority": 0}, "priority"),
    ({"payload": {"to": "x"}, "delay": -1}, "delay"),
    ({"payload": {"to": "x"}, "delay": 5, "run_at": dt.datetime(2031, 1, 1, tzinfo=UTC)}, "run_at"),
    ({"payload": {"to": "x"}, "run_at": dt.datetime(2031, 1, 1)}, "run_at"),
    ({"payload": {"to": object()}}, "payload"),
    ({"payload": {"to": "\x00"}}, "payload"),
    ({"payload": ["to", "x"]}, "payload"),
    ({"payload": {"to": "x" * 2_000_000}}, "PGQ_MAX_PAYLOAD_BYTES"),
    ({"payload": {"to": "x"}, "queue": "bad queue"}, "queue"),
    ({"payload": {"to": "x"}, "max_attempts": 0}, "max_attempts"),
    ({"payload": {"to": "x"}, "timeout": -1}, "timeout"),
    ({"payload": {"to": "x"}, "unique_key": ""}, "unique_key"),
    ({"payload": {"to": "x"}, "retry": 3}, "retry"),
]


def test_bad_input_raises_naming_the_argument_and_writes_nothing(q: pgq.Queue,
                                                                 conn: psycopg.Connection[Any]) -> None:
    q.enqueue("reports.build", {})
    before = jobs_count(conn)
    for kwargs, argument in BAD_ENQUEUE_ARGUMENTS:
        options = dict(kwargs)
        payload = options.pop("payload")
        with pytest.raises(pgq.ValidationError) as info:
            q.enqueue("emails.send", payload, **options)
        assert argument in str(info.value), (kwargs, str(info.value))
        assert jobs_count(conn) == before, kwargs


def test_bad_task_defaults_are_rejected_at_registration(q: pgq.Queue) -> None:
    with pytest.raises(pgq.ValidationError, match="priority"):
        q.task(name="bad.priority", priority=7)(lambda: None)
    with pytest.raises(pgq.ValidationError, match="already registered"):
        q.task(name="reports.build")(lambda: None)
    assert "bad.priority" not in q.tasks


# ---------------------------------------------------------------- schema and connection problems


def test_database_at_an_older_revision_is_schema_not_ready(short: pgq.Settings,
                                                           conn: psycopg.Connection[Any]) -> None:
    downgrade(short, "0001")
    assert conn.execute("SELECT version_num FROM pgq.alembic_version").fetchone() == ("0001",)
    q = pgq.connect(settings=short, strict_tasks=False)
    try:
        with pytest.raises(pgq.SchemaNotReady) as info:
            q.enqueue("reports.build", {})
    finally:
        q.close()
    message = str(info.value)
    assert "0001" in message
    assert head_revision() in message
    assert "`pgq migrate`" in message
    assert (info.value.current, info.value.needed) == ("0001", head_revision())
    assert conn.execute("SELECT count(*) FROM pgq.jobs").fetchone() == (0,)


def test_schema_that_was_never_migrated_is_schema_not_ready(short: pgq.Settings) -> None:
    with pgq.connect(settings=short.replace(schema="not_migrated"), strict_tasks=False) as q:
        with pytest.raises(pgq.SchemaNotReady, match="never migrated") as info:
            q.get(1)
    assert info.value.current is None
    assert "`pgq migrate`" in str(info.value)


SECRET = "s3cret-pw"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://u:{SECRET}@127.0.0.1:1/x",
        f"host=127.0.0.1 port=1 user=u password={SECRET} dbname=x",
        f"postgresql://u:{SECRET}@127.0.0.1:notaport/x",
        f"host=127.0.0.1 password={SECRET} no_such_option=1",
        f"postgresql://u@127.0.0.1:1/x?password={SECRET}",
    ],
)
def test_wrong_dsn_is_a_configuration_error_without_the_password(url: str) -> None:
    q = pgq.connect(url, strict_tasks=False)
    with pytest.raises(pgq.ConfigurationError) as info:
        q.enqueue("reports.build", {})
    everything = "".join(traceback.format_exception(info.value)) + repr(info.value)
    chained = info.value.__cause__ or info.value.__context__
    while chained is not None:
        everything += str(chained) + repr(chained)
        chained = chained.__cause__ or chained.__context__
    assert SECRET not in everything
    assert "127.0.0.1" in str(info.value)
    assert SECRET not in repr(q)


# ---------------------------------------------------------------- asyncio


def test_async_counterparts(q: pgq.Queue) -> None:
    async def main() -> tuple[int, list[int], pgq.Job]:
        job_id = await q.enqueue_async("reports.build", {"n": 21}, priority=2)
        many = await q.enqueue_many_async([{"task": "reports.build", "payload": {"n": 1}}])
        return job_id, many, await q.get_async(job_id)

    job_id, many, job = asyncio.run(main())
    assert (job.id, job.priority, job.payload) == (job_id, 2, {"n": 21})
    assert len(many) == 1 and many[0] != job_id
    assert run_once(q) == 2
    assert asyncio.run(q.wait_async(job_id, timeout=10)) == 42


def test_enqueue_async_validates_like_enqueue(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(pgq.ValidationError, match="priority"):
        asyncio.run(q.enqueue_async("reports.build", {}, priority=6))
    with pytest.raises(pgq.UnknownTask):
        asyncio.run(q.enqueue_async("nope", {}))
    assert jobs_count(conn) == 0


def test_an_enqueue_waiting_for_a_connection_when_the_queue_closes_fails_at_once_and_writes_nothing(
        settings: pgq.Settings, conn: psycopg.Connection[Any]) -> None:
    # The defect: a closed pool counted as a broken connection, so the enqueue was "sent"
    # three times and said "the connection broke 3 times" (an aging test's teardown).
    q = pgq.connect(settings=settings.replace(pool_size=2), strict_tasks=False)
    held = [q.pool.getconn(), q.pool.getconn()]  # every connection taken: the enqueue waits
    errors: list[BaseException] = []

    def enqueue() -> None:
        try:
            q.enqueue_many([{"task": "t"}])
        except BaseException as exc:  # inspected below
            errors.append(exc)

    producer = threading.Thread(target=enqueue)
    producer.start()
    eventually(lambda: q.pool.get_stats().get("requests_waiting", 0) == 1, "the enqueue to wait for a connection")
    pool = q.pool
    q.close()
    producer.join()
    for c in held:
        pool.putconn(c)
    assert len(errors) == 1 and isinstance(errors[0], pgq.DatabaseError), errors
    assert "closed" in str(errors[0]) and "broke" not in str(errors[0])
    assert jobs_count(conn) == 0
