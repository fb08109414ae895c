"""Issue 13, part 2: the native asyncio API.

Every ``*_async`` call runs on psycopg's async connections and pool, on the
running event loop: no thread is borrowed (the loop's default executor raises
if anything asks it for one). Each call follows the same rules as its sync
twin (one operation, two executors): the same results, the same typed errors
for bad input with nothing written, transactional enqueue on the caller's
async SQLAlchemy or psycopg connection, Redis pushes through ``redis.asyncio``.
``wait_async`` is woken by the ``<schema>_job_status`` NOTIFY, not by polling.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest
import sqlalchemy
from sqlalchemy.ext.asyncio import create_async_engine

import factories
import pgq
from pgq.redis.keys import Keys

pytestmark = [pytest.mark.integration, pytest.mark.both_modes]

T = TypeVar("T")


@pytest.fixture
def q(short: pgq.Settings) -> Iterator[pgq.Queue]:
    queue = pgq.connect(settings=short)

    @queue.task(name="reports.build")
    def build(n: int = 0) -> int:
        return n * 2

    @queue.task(name="always.fatal", max_attempts=1)
    def fatal() -> None:
        raise pgq.Fatal("cannot ever work")

    yield queue
    queue.close()


class NoThreads(concurrent.futures.ThreadPoolExecutor):
    """A default executor that refuses work: a call that borrows a thread fails."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        raise AssertionError(f"a thread was borrowed for {fn!r}")


def on_loop(q: pgq.Queue, main: Callable[[], Awaitable[T]], *, same_threads: bool = True) -> T:
    """Run ``main()`` on a fresh event loop that has no thread to lend; close the queue's async side after.

    ``same_threads``: also check that no thread was started (off where ``main`` runs a
    worker, whose runner threads outlive ``run_once``)."""

    async def run() -> T:
        asyncio.get_running_loop().set_default_executor(NoThreads())
        threads = threading.active_count()
        try:
            result = await main()
            assert not same_threads or threading.active_count() == threads, "an *_async call started a thread"
            return result
        finally:
            await q.aclose()

    return asyncio.run(run())


async def in_a_test_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a thread of the test's own (the loop's default executor lends none), joined after."""
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)


def run_once(q: pgq.Queue) -> int:
    return q.worker(queues=["default"], install_signal_handlers=False, run_maintenance=False).run_once()


def run_until_empty(q: pgq.Queue) -> int:
    worker = q.worker(queues=["default"], install_signal_handlers=False, run_maintenance=False)
    done = 0
    while ran := worker.run_once():
        done += ran
    return done


def ready_in_redis(q: pgq.Queue, queue: str = "default") -> set[int]:
    import redis

    assert q.settings.redis_url is not None
    with redis.Redis.from_url(q.settings.redis_url) as r:
        return {int(i) for i in r.zrange(Keys(q.settings.redis_prefix, q.settings.schema).ready(queue), 0, -1)}


# ---------------------------------------------------------------- the calls


def test_enqueue_async_and_its_paths_leave_the_rows_enqueue_leaves(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    async def main() -> tuple[int, int, list[int], list[int], list[int]]:
        single = await q.enqueue_async("reports.build", {"n": 21}, priority=2, timeout=30)
        keyed = await q.enqueue_async("reports.build", {"n": 1}, unique_key="k:1")
        again = await q.enqueue_async("reports.build", {"n": 2}, unique_key="k:1")
        assert again == keyed
        by_copy = await q.enqueue_many_async([{"task": "reports.build", "payload": {"n": i}} for i in range(5)])
        graph = await q.enqueue_many_async([q.job_spec("reports.build", {"n": 0}),
                                            q.job_spec("reports.build", {"n": 1}, depends_on=[pgq.ref(0)])])
        return single, keyed, by_copy, graph, [await q.enqueue_async("reports.build", delay=3600)]

    single, keyed, by_copy, graph, delayed = on_loop(q, main)
    job = q.get(single)
    assert (job.priority, job.payload, job.timeout, job.status) == (2, {"n": 21}, dt.timedelta(seconds=30), pgq.JobStatus.QUEUED)
    assert [q.get(i).payload for i in by_copy] == [{"n": i} for i in range(5)]
    assert by_copy == sorted(by_copy)
    assert q.get(graph[1]).status is pgq.JobStatus.WAITING
    assert q.get(delayed[0]).run_at > q.get(single).created_at
    # The same rows as the sync call leaves (columns a caller chose, and the defaults).
    sync_id = q.enqueue("reports.build", {"n": 21}, priority=2, timeout=30)
    columns = "task, payload, queue, priority, max_attempts, timeout, status, attempts, retry_base_seconds"
    rows = conn.execute(f"SELECT {columns} FROM pgq.jobs WHERE id = ANY(%s) ORDER BY id", [[single, sync_id]]).fetchall()
    assert rows[0] == rows[1]
    if q.settings.redis_url is not None:  # due jobs were pushed to Redis by redis.asyncio
        assert {single, keyed, *by_copy, graph[0]} <= ready_in_redis(q)
        assert graph[1] not in ready_in_redis(q) and delayed[0] not in ready_in_redis(q)


def test_get_cancel_wait_and_the_dead_letter_calls_async(q: pgq.Queue) -> None:
    done = q.enqueue("reports.build", {"n": 21})
    dead = q.enqueue("always.fatal")
    assert run_once(q) == 2
    to_cancel = q.enqueue("reports.build")

    async def main() -> None:
        assert await q.wait_async(done, timeout=10) == 42
        assert (await q.get_async(done)).status is pgq.JobStatus.COMPLETED
        with pytest.raises(pgq.JobFailed) as failed:
            await q.wait_async(dead, timeout=10)
        assert failed.value.status == pgq.JobStatus.DEAD
        assert [d.job_id for d in await q.dead_letters_async()] == [dead]
        assert await q.cancel_async(to_cancel) is True
        assert await q.cancel_async(to_cancel) is False
        with pytest.raises(pgq.InvalidTransition):
            await q.cancel_async(done)
        assert await q.requeue_dead_async([dead]) == [dead]
        assert await q.dead_letters_async() == []

    on_loop(q, main)
    assert q.get(dead).status is pgq.JobStatus.QUEUED
    if q.settings.redis_url is not None:
        assert dead in ready_in_redis(q)  # the requeued job was pushed
    assert run_once(q) == 1 and q.get(dead).status is pgq.JobStatus.DEAD

    async def purge() -> list[int]:
        return await q.purge_dead_async([dead])

    assert on_loop(q, purge) == [dead]
    with pytest.raises(pgq.JobNotFound):
        q.get(dead)


BAD_CALLS: list[tuple[str, Callable[[pgq.Queue], Awaitable[Any]], type[pgq.PgqError], str]] = [
    ("priority", lambda q: q.enqueue_async("reports.build", {}, priority=6), pgq.ValidationError, "priority"),
    ("unknown task", lambda q: q.enqueue_async("nope", {}), pgq.UnknownTask, "nope"),
    ("payload", lambda q: q.enqueue_async("reports.build", {"x": object()}), pgq.ValidationError, "JSON"),
    ("negative delay", lambda q: q.enqueue_async("reports.build", delay=-1), pgq.ValidationError, "delay"),
    ("unknown option", lambda q: q.enqueue_async("reports.build", colour="red"), pgq.ValidationError, "colour"),
    ("on_duplicate", lambda q: q.enqueue_async("reports.build", on_duplicate="ignore"), pgq.ValidationError,
     "on_duplicate"),
    ("missing parent", lambda q: q.enqueue_async("reports.build", depends_on=[10**12]), pgq.ValidationError, "10"),
    ("one bad item", lambda q: q.enqueue_many_async([{"task": "reports.build"}, {"task": "reports.build", "priority": 0}]),
     pgq.ValidationError, "job 1"),
    ("not a list", lambda q: q.enqueue_many_async("reports.build"), pgq.ValidationError, "list"),  # type: ignore[arg-type]
    ("get id", lambda q: q.get_async(0), pgq.ValidationError, "job id"),
    ("get unknown", lambda q: q.get_async(10**12), pgq.JobNotFound, "does not exist"),
    ("cancel id", lambda q: q.cancel_async("7"), pgq.ValidationError, "job id"),  # type: ignore[arg-type]
    ("cancel unknown", lambda q: q.cancel_async(10**12), pgq.JobNotFound, ""),
    ("wait timeout", lambda q: q.wait_async(1, timeout=-1), pgq.ValidationError, "timeout"),
    ("wait unknown", lambda q: q.wait_async(10**12, timeout=5), pgq.JobNotFound, "does not exist"),
    ("dead_letters limit", lambda q: q.dead_letters_async(limit=0), pgq.ValidationError, "limit"),
    ("dead_letters queue", lambda q: q.dead_letters_async(queue="bad queue"), pgq.ValidationError, "queue"),
    ("requeue ids", lambda q: q.requeue_dead_async([True]), pgq.ValidationError, "job id"),  # type: ignore[list-item]
    ("requeue not dead", lambda q: q.requeue_dead_async([1]), pgq.PgqError, ""),
    ("requeue flag", lambda q: q.requeue_dead_async(with_dependents="yes"), pgq.ValidationError,  # type: ignore[arg-type]
     "with_dependents"),
    ("purge older_than", lambda q: q.purge_dead_async(older_than=float("nan")), pgq.ValidationError, "older_than"),
    ("sync connection", lambda q: q.enqueue_async("reports.build", connection=object()), pgq.ValidationError,
     "AsyncConnection"),
]


@pytest.mark.parametrize(("name", "call", "error", "message"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_input_to_an_async_call_raises_a_typed_error_and_changes_nothing(
    q: pgq.Queue, conn: psycopg.Connection[Any], name: str, call: Callable[[pgq.Queue], Awaitable[Any]],
    error: type[pgq.PgqError], message: str,
) -> None:
    q.enqueue("reports.build", {"n": 1})  # job 1: queued, not dead
    before = factories.snapshot(conn)
    with pytest.raises(error, match=message or None):
        on_loop(q, lambda: call(q))
    assert factories.snapshot(conn) == before


def test_a_sync_connection_is_refused_by_an_async_call_and_an_async_one_by_a_sync_call(
    q: pgq.Queue, conn: psycopg.Connection[Any], db_url: str,
) -> None:
    with pytest.raises(pgq.ValidationError, match="AsyncConnection"):
        on_loop(q, lambda: q.enqueue_async("reports.build", connection=conn))

    async def sync_call_on_async_connection() -> None:
        async with await psycopg.AsyncConnection.connect(db_url) as aconn:
            q.enqueue("reports.build", connection=aconn)

    with pytest.raises(pgq.ValidationError, match="async one goes to the"):
        asyncio.run(sync_call_on_async_connection())
    assert factories.snapshot(conn)["jobs"] == []


# ---------------------------------------------------------------- transactional enqueue


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
def test_transactional_enqueue_on_an_async_sqlalchemy_connection(
    q: pgq.Queue, conn: psycopg.Connection[Any], db_url: str, commit: bool,
) -> None:
    async def main() -> list[int]:
        engine = create_async_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            async with engine.connect() as aconn:
                await aconn.begin()
                await aconn.execute(sqlalchemy.text("CREATE TABLE orders (id int)"))
                ids = [await q.enqueue_async("reports.build", {"n": 1}, connection=aconn)]
                ids += await q.enqueue_many_async([{"task": "reports.build", "payload": {"n": 2}}] * 3,
                                                  connection=aconn)
                # Inside the caller's transaction the jobs are there; outside, not yet.
                assert (await aconn.execute(sqlalchemy.text("SELECT count(*) FROM pgq.jobs"))).scalar() == 4
                assert conn.execute("SELECT count(*) FROM pgq.jobs").fetchone() == (0,)
                await (aconn.commit() if commit else aconn.rollback())
            return ids
        finally:
            await engine.dispose()

    ids = on_loop(q, main)
    rows = conn.execute("SELECT id FROM pgq.jobs ORDER BY id").fetchall()
    assert [r[0] for r in rows] == (sorted(ids) if commit else [])
    if q.settings.redis_url is not None:
        assert not set(ids) & ready_in_redis(q)  # the reconciler mirrors transactional enqueues after the commit


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
def test_transactional_enqueue_on_a_psycopg_async_connection(
    q: pgq.Queue, conn: psycopg.Connection[Any], db_url: str, commit: bool,
) -> None:
    async def main() -> list[int]:
        async with await psycopg.AsyncConnection.connect(db_url) as aconn:  # not autocommit: a transaction opens
            ids = [await q.enqueue_async("reports.build", {"n": 1}, connection=aconn)]
            ids += await q.enqueue_many_async([{"task": "reports.build", "payload": {"n": i}} for i in range(50)],
                                              connection=aconn)  # COPY, inside the caller's transaction
            assert aconn.info.transaction_status is psycopg.pq.TransactionStatus.INTRANS
            await (aconn.commit() if commit else aconn.rollback())
            return ids

    ids = on_loop(q, main)
    assert len(ids) == 51
    rows = conn.execute("SELECT id, payload FROM pgq.jobs ORDER BY id").fetchall()
    assert [r[0] for r in rows] == (ids if commit else [])
    if commit:
        assert [r[1] for r in rows[1:]] == [{"n": i} for i in range(50)]


# ---------------------------------------------------------------- wait on LISTEN


def test_wait_async_reads_once_and_sleeps_until_a_notify(q: pgq.Queue) -> None:
    """The status is read once, and once more at the timeout; with no notification no
    statement is sent in between (the thread-based wait polled every 5 to 50 ms, here 1 ms)."""
    job_id = q.enqueue("reports.build", {"n": 1})

    async def main() -> tuple[int, int]:
        pool = await q._async().side.open()
        before = pool.get_stats()["requests_num"]
        with pytest.raises(pgq.WaitTimeout, match="still queued"):
            await q.wait_async(job_id, timeout=0.5, poll_interval=0.001)
        return pool.get_stats()["requests_num"] - before, q._async().side.listens

    reads, listens = on_loop(q, main)
    assert (reads, listens) == (2, 1)


def test_wait_async_is_woken_by_the_completion_notify(q: pgq.Queue) -> None:
    job_id = q.enqueue("reports.build", {"n": 21})
    other = q.enqueue("reports.build", {"n": 1})

    async def main() -> tuple[Any, int]:
        side = q._async().side
        pool = await side.open()
        waiting = asyncio.create_task(q.wait_async(job_id, timeout=60))
        while job_id not in side._waiters:  # the waiter LISTENs and has read the status once
            await asyncio.sleep(0)
        reads = pool.get_stats()["requests_num"]
        # Another job's status changes: one read of the waited jobs, the waiter sleeps on.
        q.cancel(other)
        while pool.get_stats()["requests_num"] == reads:
            await asyncio.sleep(0)
        assert not waiting.done()
        # The completion commits (a worker run in the test's own thread): its NOTIFY wakes the waiter.
        assert await in_a_test_thread(run_once, q) == 1
        return await waiting, pool.get_stats()["requests_num"] - reads

    result, reads = on_loop(q, main, same_threads=False)
    assert result == 42
    # A batched check after the cancel, after the claim and after the completion (fewer
    # when notifications come together), and the woken waiter's own read.
    assert 2 <= reads <= 4


def test_many_waiters_share_one_listen_connection_and_one_read_per_notify(q: pgq.Queue) -> None:
    ids = q.enqueue_many([{"task": "reports.build", "payload": {"n": i}} for i in range(20)])

    async def main() -> tuple[list[Any], int, int]:
        side = q._async().side
        pool = await side.open()
        waiters = [asyncio.create_task(q.wait_async(i, timeout=60)) for i in ids]
        while len(side._waiters) < len(ids):
            await asyncio.sleep(0)
        reads = pool.get_stats()["requests_num"]
        assert await in_a_test_thread(run_until_empty, q) == 20
        results = await asyncio.gather(*waiters)
        return results, pool.get_stats()["requests_num"] - reads, side.listens

    results, reads, listens = on_loop(q, main, same_threads=False)
    assert results == [2 * i for i in range(20)]
    assert listens == 1
    # Each waiter's own read once woken, plus one batched check per notification (two
    # claims, two completion batches, the empty claim): not one read per waiter per notification.
    assert 20 < reads <= 20 + 5


def test_wait_async_polls_in_poll_only_mode(short: pgq.Settings) -> None:
    q = pgq.connect(settings=short.replace(listen=False))
    q.task(name="reports.build")(lambda n=0: n * 2)
    job_id = q.enqueue("reports.build")
    try:
        async def main() -> int:
            pool = await q._async().side.open()
            before = pool.get_stats()["requests_num"]
            with pytest.raises(pgq.WaitTimeout):
                await q.wait_async(job_id, timeout=0.3, poll_interval=0.05)
            assert q._async().side.listens == 0
            return int(pool.get_stats()["requests_num"] - before)

        assert on_loop(q, main) >= 3
    finally:
        q.close()


# ---------------------------------------------------------------- connections


def test_a_pooled_async_connection_the_server_closed_is_replaced_before_sending(
    q: pgq.Queue, conn: psycopg.Connection[Any],
) -> None:
    first = q.enqueue("reports.build")
    q.close()

    async def main() -> int:
        await q.get_async(first)  # the async pool holds an idle connection
        others = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        conn.execute(f"SELECT pg_terminate_backend(pid) {others}")
        while conn.execute(f"SELECT count(*) {others}").fetchone() != (0,):  # until the backend has exited
            await asyncio.sleep(0)
        return await q.enqueue_async("reports.build", {"n": 2})

    job_id = on_loop(q, main)
    assert q.get(job_id).payload == {"n": 2}


def test_the_async_side_closes_with_its_event_loop(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    """A queue used by several asyncio.run() calls leaves no connection behind."""
    for n in range(3):
        job_id = asyncio.run(q.enqueue_async("reports.build", {"n": n}))
        assert asyncio.run(q.get_async(job_id)).payload == {"n": n}
    q.close()
    others = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    for _ in range(10_000):  # a closed connection's backend exits a moment after the client left
        if conn.execute(others).fetchone() == (0,):
            break
    assert conn.execute(others).fetchone() == (0,)
