"""The Redis mirror against a real Redis and Postgres: what gets pushed, in which
order, how workers take ids and claim them in Postgres, and how the reconciler
keeps Redis in step at the cost of what changed.

The workers here poll Postgres only every 600 s (``rsettings``), so a job that
runs was delivered by Redis.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import redis
from click.testing import CliRunner

import factories
import pgq
from factories import eventually
from pgq.cli import main
from pgq.redis.claim_source import RedisClaimSource
from pgq.redis.client import RedisClient
from pgq.redis.keys import ABANDONED_MS, Keys
from pgq.redis.reconciler import Reconciler
from pgq.worker.claim import PostgresClaimSource
from pgq.worker.positions import Positions
from pgq.clock import ManualClock, SystemClock
from pgq.worker import WorkerCounters

pytestmark = [pytest.mark.integration, pytest.mark.redis]


@pytest.fixture
def q(rsettings: pgq.Settings) -> Iterator[pgq.Queue]:
    queue = pgq.connect(settings=rsettings, strict_tasks=False)
    yield queue
    queue.close()


@pytest.fixture
def r(rsettings: pgq.Settings) -> Iterator[Any]:
    """A plain client to look at the mirror's keys."""
    client = redis.Redis.from_url(rsettings.redis_url or "", decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def keys(rsettings: pgq.Settings) -> Keys:
    return Keys(rsettings.redis_prefix, rsettings.schema)


@pytest.fixture
def reconcile(q: pgq.Queue) -> Callable[..., Any]:
    """One reconciler pass (what the leader runs every redis_reconcile_interval_seconds)."""
    assert q.redis is not None
    reconciler = Reconciler(q.settings, q.pool, q.redis)
    return reconciler.run_once


def ready(r: Any, keys: Keys, queue: str = "default") -> list[int]:
    return [int(i) for i in r.zrange(keys.ready(queue), 0, -1)]


def worker(q: pgq.Queue, **options: Any) -> pgq.Worker:
    options.setdefault("install_signal_handlers", False)
    options.setdefault("run_maintenance", False)
    options.setdefault("queues", ["default"])
    return q.worker(**options)


def status(conn: psycopg.Connection[Any], job_id: int) -> str:
    return factories.job(conn, job_id)["status"]


# ---------------------------------------------------------------- pushing


def test_enqueue_pushes_due_jobs_in_priority_then_enqueue_order(q: pgq.Queue, r: Any, keys: Keys) -> None:
    low = q.enqueue("t", {}, priority=1)
    high = q.enqueue("t", {}, priority=5)
    mid = q.enqueue("t", {}, priority=3)
    high2 = q.enqueue("t", {}, priority=5)
    q.enqueue("t", {}, priority=5, delay=3600)  # not due: the reconciler mirrors it when it is
    bulk = q.enqueue_many([{"task": "t", "priority": 4}, {"task": "t", "priority": 2}])
    other = q.enqueue("t", {}, queue="other")
    assert ready(r, keys) == [high, high2, bulk[0], mid, bulk[1], low]
    assert ready(r, keys, "other") == [other]


def test_worker_claims_in_priority_order_and_leaves_no_popped_batch_behind(
    q: pgq.Queue, r: Any, keys: Keys, conn: psycopg.Connection[Any],
) -> None:
    order: list[int] = []

    @q.task(name="t")
    def t(n: int) -> None:
        order.append(n)

    for n, priority in enumerate([1, 5, 3, 5, 2]):
        q.enqueue("t", {"n": n}, priority=priority)
    w = worker(q, concurrency=1, batch_size=1)
    while w.run_once():
        pass
    assert order == [1, 3, 2, 4, 0]
    assert w.counters.extra["redis_claimed"] == 5
    assert w.counters.extra.get("redis_safety_polls", 0) == 1  # the final empty run_once asked Postgres
    assert r.exists(keys.popped(str(w.id), "default")) == 0
    assert conn.execute("SELECT count(*) FROM pgq.jobs WHERE status = 'completed'").fetchone() == (5,)


def test_duplicate_ids_pushed_twice_are_mirrored_and_run_once(
    q: pgq.Queue, r: Any, keys: Keys, conn: psycopg.Connection[Any],
) -> None:
    ran: list[int] = []

    @q.task(name="t")
    def t(n: int) -> None:
        ran.append(n)

    ids = q.enqueue_many([{"task": "t", "payload": {"n": n}} for n in range(20)])
    assert q.redis is not None
    entries = [(i, "default", 3) for i in ids]
    assert q.redis.push(entries) == 0  # already there
    assert q.redis.push(entries[:5]) == 0
    assert r.zcard(keys.ready("default")) == 20
    w = worker(q, concurrency=4)
    w.run(burst=True)
    assert sorted(ran) == list(range(20))
    assert w.counters.extra.get("redis_dropped", 0) == 0


def test_stale_ids_are_dropped_not_run(q: pgq.Queue, r: Any, keys: Keys, conn: psycopg.Connection[Any],
                                       reconcile: Callable[..., Any]) -> None:
    ran: list[int] = []

    @q.task(name="t")
    def t(n: int) -> None:
        ran.append(n)

    live, cancelled, completed, not_due = (q.enqueue("t", {"n": n}) for n in range(4))
    q.cancel(cancelled)
    conn.execute("UPDATE pgq.jobs SET status = 'completed', finished_at = now() WHERE id = %s", (completed,))
    conn.execute("UPDATE pgq.jobs SET status = 'retrying', attempts = 1, run_at = now() + interval '1 hour'"
                 " WHERE id = %s", (not_due,))
    assert ready(r, keys) == [live, cancelled, completed, not_due]  # Redis still suggests all four
    w = worker(q, concurrency=4)
    assert w.run_once() == 1
    assert ran == [0]
    assert w.counters.extra["redis_dropped"] == 3
    assert status(conn, cancelled) == "cancelled" and status(conn, completed) == "completed"
    assert status(conn, not_due) == "retrying"
    assert ready(r, keys) == [] and r.exists(keys.popped(str(w.id), "default")) == 0
    # Once due, the dropped retry comes back through the reconciler, and runs.
    conn.execute("UPDATE pgq.jobs SET run_at = now() WHERE id = %s", (not_due,))
    reconcile()
    assert ready(r, keys) == [not_due]
    assert w.run_once() == 1 and ran == [0, 3]


def test_run_once_asks_postgres_when_every_id_redis_offers_is_stale(
    q: pgq.Queue, r: Any, keys: Keys, conn: psycopg.Connection[Any],
) -> None:
    """Redis offers only ids of finished jobs, and a runnable job reached Postgres without
    a push (enqueued in SQL): run_once runs it instead of reporting that nothing ran."""
    ran: list[int] = []

    @q.task(name="t")
    def t(n: int) -> None:
        ran.append(n)

    stale = [q.enqueue("t", {"n": n}) for n in range(5)]  # more than one claim call looks through
    conn.execute("UPDATE pgq.jobs SET status = 'completed', finished_at = now() WHERE id = ANY(%s)", (stale,))
    sql_only = factories.insert_job(conn, task="t", payload={"n": 9})
    assert ready(r, keys) == stale
    w = worker(q, concurrency=1, batch_size=1)
    assert w.run_once() == 1
    assert ran == [9] and status(conn, sql_only) == "completed"


def test_reconciler_removes_ids_postgres_says_are_not_runnable(
    q: pgq.Queue, r: Any, keys: Keys, conn: psycopg.Connection[Any], reconcile: Callable[..., Any],
) -> None:
    keep = q.enqueue("t", {})
    gone = q.enqueue("t", {})
    q.cancel(gone)  # cancel is not pushed to Redis: the id is stale there
    assert ready(r, keys) == [keep, gone]
    report = reconcile()
    assert report.removed == 1
    assert ready(r, keys) == [keep]


# ---------------------------------------------------------------- reconciliation


def test_transactional_enqueue_reaches_redis_only_after_the_commit(
    q: pgq.Queue, r: Any, keys: Keys, db_url: str, reconcile: Callable[..., Any],
) -> None:
    with psycopg.connect(db_url) as own:  # a transaction is open
        job_id = q.enqueue("t", {}, connection=own)
        assert ready(r, keys) == []  # not pushed: no after-commit hook
        report = reconcile()  # a pass while the enqueueing transaction is still open
        assert ready(r, keys) == []
        assert report.horizon is not None
        own.commit()
    # The pass's watermark stayed at or before the open transaction's start, so the
    # next pass sees the job although it committed after that pass.
    report = reconcile()
    assert report.added == 1
    assert ready(r, keys) == [job_id]


def test_an_offer_leaves_out_ids_popped_since_the_reconciler_read_them(
    q: pgq.Queue, r: Any, keys: Keys,
) -> None:
    # The reconciler notes Redis' time, then reads a page of runnable jobs; ids a
    # worker pops after that time are taken, not missing, and must not come back.
    assert q.redis is not None
    ids = q.enqueue_many([{"task": "t"} for _ in range(4)])
    entries = [(i, "default", 3) for i in ids]
    before_pop = q.redis.time_ms()
    q.redis.pop(str(uuid.uuid4()), ["default"], 2, "1")
    assert q.redis.push(entries, popped_before=before_pop) == 0
    assert ready(r, keys) == ids[2:]
    # Popped before the read (a retry that fell due since, or a pop not claimed
    # yet): offered again, and Postgres decides at the claim.
    after_pop = q.redis.time_ms() + 1
    assert q.redis.push(entries, popped_before=after_pop) == 2
    assert ready(r, keys) == ids


def test_jobs_enqueued_in_sql_are_mirrored_and_a_second_pass_reads_nothing(
    q: pgq.Queue, r: Any, keys: Keys, conn: psycopg.Connection[Any], reconcile: Callable[..., Any],
) -> None:
    ids = factories.insert_jobs(conn, 3000)  # another language, psql: no push
    first = reconcile()
    assert (first.offered, first.added) == (3000, 3000)
    assert r.zcard(keys.ready("default")) == 3000
    # Nothing changed: the next pass reads no row, however many jobs are runnable.
    second = reconcile()
    assert (second.offered, second.added) == (0, 0)
    more = q.enqueue_many([{"task": "t"} for _ in range(5)])
    third = reconcile()
    assert (third.offered, third.added) == (5, 0)  # pushed already; read because they are new
    assert r.zcard(keys.ready("default")) == 3005
    assert set(ready(r, keys)) == set(ids) | set(more)


def test_a_retry_falling_due_a_requeue_and_a_rescue_reach_redis(
    q: pgq.Queue, r: Any, keys: Keys, conn: psycopg.Connection[Any], reconcile: Callable[..., Any],
) -> None:
    attempts: list[int] = []

    @q.task(name="flaky", max_attempts=3)
    def flaky() -> None:
        attempts.append(1)
        raise pgq.Retry(after=0.3)

    @q.task(name="fatal")
    def fatal() -> None:
        raise pgq.Fatal("no")

    retry_id = q.enqueue("flaky", {})
    dead_id = q.enqueue("fatal", {})
    w = worker(q, concurrency=2)
    assert w.run_once() == 2
    assert status(conn, retry_id) == "retrying" and status(conn, dead_id) == "dead"
    reconcile()
    assert retry_id not in ready(r, keys)  # not due yet

    def mirrored() -> bool:
        reconcile()
        return retry_id in ready(r, keys)

    eventually(mirrored, "the retry to be mirrored once due")
    assert q.requeue_dead([dead_id]) == [dead_id]
    assert dead_id in ready(r, keys)  # pushed by requeue_dead itself

    stale_worker = factories.insert_worker(conn, queues=["default"], last_heartbeat=factories.db_now(conn) - dt.timedelta(hours=1))
    rescued = factories.insert_job(conn, status="running", worker_id=stale_worker)
    report = pgq.Maintenance(q.settings, q.pool, q.queries, redis=q.redis).run_once()
    assert report.rescued_job_ids == [rescued]
    assert report.reconciled is not None and rescued in ready(r, keys)


def test_ids_a_dead_worker_popped_go_back_to_the_ready_set(
    q: pgq.Queue, r: Any, keys: Keys, conn: psycopg.Connection[Any], reconcile: Callable[..., Any],
) -> None:
    ids = q.enqueue_many([{"task": "t"} for _ in range(3)])
    assert q.redis is not None
    ghost = str(uuid.uuid4())  # popped, then died before claiming (never registered in Postgres)
    popped = q.redis.pop(ghost, ["default"], 2, "1")
    assert popped is not None and [i for i, _, _ in popped] == ids[:2]
    assert ready(r, keys) == ids[2:]
    assert r.hget(keys.popped(ghost, "default"), "1").split()[1:] == [str(i) for i in ids[:2]]
    report = reconcile()
    assert report.reclaimed_workers == [ghost]
    assert ready(r, keys) == ids
    assert r.exists(keys.popped(ghost, "default")) == 0


def test_a_live_workers_batch_popped_long_ago_and_never_claimed_goes_back(
    q: pgq.Queue, r: Any, keys: Keys, conn: psycopg.Connection[Any], reconcile: Callable[..., Any],
) -> None:
    # A live worker (heartbeat key present) popped two batches; the first is older
    # than ABANDONED_MS (it could not give it back when its claim failed).
    ids = q.enqueue_many([{"task": "t"} for _ in range(4)])
    reconcile()  # the pass that reads these new jobs (they are pushed already)
    assert q.redis is not None
    holder = str(uuid.uuid4())
    q.redis.heartbeat(holder, {})
    q.redis.pop(holder, ["default"], 2, "1")
    q.redis.pop(holder, ["default"], 1, "2")
    conn.execute("UPDATE pgq.jobs SET status = 'cancelled' WHERE id = %s", (ids[1],))
    popped_ms = int(r.hget(keys.popped(holder, "default"), "1").split()[0])
    r.hset(keys.popped(holder, "default"), "1", f"{popped_ms - ABANDONED_MS - 1} {ids[0]} {ids[1]}")
    report = reconcile()
    assert report.abandoned == 2 and report.reclaimed_workers == []
    assert ready(r, keys) == [ids[0], ids[3]]  # the cancelled one is not given back
    assert list(r.hgetall(keys.popped(holder, "default"))) == ["2"]  # the recent batch is left alone


def test_a_busy_worker_deletes_claimed_batches_with_its_next_pop_and_a_quiet_one_at_once(
    q: pgq.Queue, r: Any, keys: Keys,
) -> None:
    assert q.redis is not None
    ids = q.enqueue_many([{"task": "t"} for _ in range(4)])
    worker_id = uuid.uuid4()
    with q.pool.connection() as c:
        q.queries.register_worker(c, worker_id, "h", 1, ["default"], 4, "{}")
    wm = claim_source(q, worker_id)
    popped = r.hgetall  # what Redis says this worker popped and has not claimed
    first = wm.claim_from_redis(2)
    assert first is not None and [j.id for j in first] == ids[:2]
    assert list(popped(keys.popped(wm.worker, "default"))) == ["1"]  # claimed; deleted by the next pop
    wm.finished([ids[0]])  # still holding a job: no Redis call
    assert list(popped(keys.popped(wm.worker, "default"))) == ["1"]
    second = wm.claim_from_redis(1)
    assert second is not None and [j.id for j in second] == [ids[2]]
    assert list(popped(keys.popped(wm.worker, "default"))) == ["2"]
    wm.finished([ids[1], ids[2]])  # holds no job any more: deletes what it claimed
    assert r.exists(keys.popped(wm.worker, "default")) == 0


def claim_source(q: pgq.Queue, worker_id: uuid.UUID, clock: ManualClock | None = None) -> RedisClaimSource:
    """A worker's Redis claim source (with its Postgres fallback), as ``Worker`` builds it."""
    assert q.redis is not None
    counters = WorkerCounters()
    fallback = PostgresClaimSource(lambda: q.pool, q.queries, worker_id, ["default"], counters,
                                   Positions(lambda _: False, clock or SystemClock()))
    return RedisClaimSource(q.redis, worker_id, ["default"], counters, fallback, lambda: q.pool, clock=clock)


def _registered_source(q: pgq.Queue, clock: ManualClock) -> RedisClaimSource:
    worker_id = uuid.uuid4()
    with q.pool.connection() as c:
        q.queries.register_worker(c, worker_id, "h", 1, ["default"], 10, "{}")
    return claim_source(q, worker_id, clock)


def test_a_busy_worker_pops_ahead_and_claims_what_it_popped_without_popping_again(
    q: pgq.Queue, r: Any, keys: Keys, conn: psycopg.Connection[Any],
) -> None:
    ids = q.enqueue_many([{"task": "t"} for _ in range(300)])
    clock = ManualClock(100.0)
    wm = _registered_source(q, clock)
    claimed = []
    for _ in range(4):
        jobs = wm.claim_from_redis(10)
        assert jobs is not None
        claimed += [j.id for j in jobs]
        clock.advance(0.01)  # 10 jobs per 10 ms: 1,000 jobs/s, so 50 popped ahead once measured
    assert claimed == ids[:40]
    # Two pops to measure the rate, a third with 50 ahead; the fourth claim took from those.
    assert wm.counters.extra["redis_pops"] == 3
    assert r.zcard(keys.ready("default")) == 300 - 80
    (batch,) = r.hvals(keys.popped(wm.worker, "default"))  # only the batch with ids popped ahead is left
    assert batch.split()[1:] == [str(i) for i in ids[20:80]]
    # The database refuses the next claim: what was taken and what was popped ahead go back.
    with q.pool.connection() as c:
        q.queries.deregister_worker(c, wm.worker_id)
    with factories.raises_sqlstate("PQ002"):
        wm.claim_from_redis(10)
    assert ready(r, keys) == ids[40:]
    assert r.exists(keys.popped(wm.worker, "default")) == 0
    assert factories.statuses(conn, ids[40:]) == dict.fromkeys(ids[40:], "queued")


def test_a_worker_pops_ahead_only_from_a_backlog_and_gives_it_back_at_shutdown(
    q: pgq.Queue, r: Any, keys: Keys,
) -> None:
    ids = q.enqueue_many([{"task": "t"} for _ in range(80)])
    clock = ManualClock(100.0)
    wm = _registered_source(q, clock)
    for _ in range(3):  # the third would pop 50 ahead, but that would leave fewer than 100 behind
        wm.claim_from_redis(10)
        clock.advance(0.01)
    assert r.zcard(keys.ready("default")) == 50
    wm.finished(ids[:20])
    more = q.enqueue_many([{"task": "t"} for _ in range(200)])
    wm.claim_from_redis(10)  # now there is a backlog: 10 claimed, 50 popped ahead
    assert r.zcard(keys.ready("default")) == 250 - 60
    wm.retire()  # shutdown: the claimed jobs are running, the 50 popped ahead go back
    assert ready(r, keys) == ids[40:] + more


def test_jobs_released_at_shutdown_go_back_to_redis_at_once(
    q: pgq.Queue, r: Any, keys: Keys, conn: psycopg.Connection[Any],
) -> None:
    assert q.redis is not None
    ids = q.enqueue_many([{"task": "t"} for _ in range(3)])
    worker_id = uuid.uuid4()
    with q.pool.connection() as c:
        q.queries.register_worker(c, worker_id, "h", 1, ["default"], 4, "{}")
    wm = claim_source(q, worker_id)
    jobs = wm.claim_from_redis(3)
    assert jobs is not None and len(jobs) == 3
    wm.forget_claimed()
    assert ready(r, keys) == [] and r.exists(keys.popped(wm.worker, "default")) == 0
    wm.finished([ids[0]])
    with q.pool.connection() as c:  # what a shutdown does with jobs it did not start
        q.queries.release_jobs(c, worker_id, ids[1:], [1, 1])
    wm.retire()
    assert ready(r, keys) == ids[1:]


def test_without_a_built_mirror_workers_use_postgres_until_it_is_rebuilt(
    q: pgq.Queue, r: Any, keys: Keys, conn: psycopg.Connection[Any], reconcile: Callable[..., Any],
) -> None:
    ids = q.enqueue_many([{"task": "t"} for _ in range(4)])
    r.delete(keys.mirror, keys.ready("default"), keys.built("default"))  # what FLUSHALL does to this deployment
    w = worker(q, concurrency=2)
    assert w.run_once() == 2
    assert w.counters.extra["redis_not_built"] >= 1 and "redis_claimed" not in w.counters.extra
    report = reconcile()
    assert report.rebuilt and report.offered == 2
    assert ready(r, keys) == ids[2:]
    assert w.run_once() == 2
    assert w.counters.extra["redis_claimed"] == 2


# ---------------------------------------------------------------- waiting, heartbeats, status


def test_an_idle_worker_is_woken_by_redis_and_asks_postgres_nothing(
    rsettings: pgq.Settings, conn: psycopg.Connection[Any], running: Callable[..., Any],
) -> None:
    # The claim loop's own poll is 30 s: a pickup within seconds came from a Redis wake-up.
    with pgq.connect(settings=rsettings.replace(poll_interval_seconds=30), strict_tasks=False) as q:
        started = threading.Event()

        @q.task(name="t")
        def t() -> None:
            started.set()

        w = worker(q)
        run = running(w)
        eventually(lambda: w._idle.is_set(), "the worker to be idle")
        job_id = q.enqueue("t", {})
        assert started.wait(5), "an idle worker was not woken by the push"
        eventually(lambda: status(conn, job_id) == "completed", "the job to complete")
        run.stop()
    # One claim round trip: the one for the pushed job. No poll, no next-due lookup.
    assert w.counters.claim_round_trips == 1
    assert w.counters.extra["redis_claimed"] == 1
    assert "redis_safety_polls" not in w.counters.extra


def test_worker_heartbeat_is_also_a_redis_key_with_a_ttl(q: pgq.Queue, r: Any, keys: Keys) -> None:
    w = worker(q)
    w.run_once()  # registers
    w.heartbeat()
    key = keys.heartbeat(str(w.id))
    assert 0 < r.pttl(key) <= q.settings.redis_heartbeat_ttl_seconds * 1000
    assert json.loads(r.get(key))["queues"] == ["default"]


def test_status_shows_ids_in_redis_against_runnable_in_postgres(
    q: pgq.Queue, rsettings: pgq.Settings, conn: psycopg.Connection[Any], reconcile: Callable[..., Any],
) -> None:
    q.enqueue_many([{"task": "t"} for _ in range(3)])
    factories.insert_jobs(conn, 2)  # not mirrored yet
    env = {"PGQ_DATABASE_URL": rsettings.database_url or "", "PGQ_REDIS_URL": rsettings.redis_url or "",
           "PGQ_REDIS_PREFIX": rsettings.redis_prefix}
    result = CliRunner().invoke(main, ["status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    mirror = json.loads(result.output)["redis_mirror"]
    assert mirror["built"] is True
    assert mirror["queues"]["default"] == {"in_redis": 3, "runnable_in_postgres": 5}
    reconcile()
    result = CliRunner().invoke(main, ["status"], env=env)
    assert result.exit_code == 0, result.output
    assert "redis mirror: last pass" in result.output
    mirror_table = result.output.split("redis mirror:", 1)[1].splitlines()
    line = next(x for x in mirror_table if x.startswith("default "))
    assert line.split()[1:] == ["5", "5"]


def test_redis_client_refuses_a_malformed_url(settings: pgq.Settings) -> None:
    with pytest.raises(pgq.ConfigurationError, match="PGQ_REDIS_URL"):
        RedisClient(settings.replace(redis_url="http://not-redis"))


def test_a_queue_whose_node_lost_its_data_uses_postgres_until_only_it_is_rebuilt(
    q: pgq.Queue, r: Any, keys: Keys, reconcile: Callable[..., Any],
) -> None:
    a = q.enqueue_many([{"task": "t", "queue": "a"} for _ in range(3)])
    b = q.enqueue_many([{"task": "t", "queue": "b"} for _ in range(3)])
    assert q.redis is not None
    assert popped_ids(q.redis.pop("w", ["a", "b"], 2, "1")) == [(a[0], "a"), (a[1], "a")]
    # Queue b's node restarted empty (Redis Cluster: its slot's keys only).
    r.delete(*[k for k in r.scan_iter(match=keys.slot("b") + ":*")])
    assert q.redis.pop("w", ["b"], 1, "2") is None  # not built: the Postgres path
    assert q.redis.pop("w", ["a", "b"], 1, "3") is None  # a worker of both waits for b too
    assert popped_ids(q.redis.pop("w", ["a"], 1, "4")) == [(a[2], "a")]
    report = reconcile()
    assert not report.rebuilt  # the mirror hash survived: only b is rebuilt
    assert ready(r, keys, "b") == b and r.exists(keys.built("b"))
    assert popped_ids(q.redis.pop("w", ["b"], 3, "5")) == [(i, "b") for i in b]


def test_the_single_slot_layout_is_deleted_and_the_mirror_rebuilt(
    q: pgq.Queue, r: Any, keys: Keys, reconcile: Callable[..., Any],
) -> None:
    ids = q.enqueue_many([{"task": "t"} for _ in range(3)])
    old = {f"{keys.base}:ready:default": "zset", f"{keys.base}:wake:default": "list",
           f"{keys.base}:popped:w": "hash", f"{keys.base}:owners": "set", f"{keys.base}:popped-at": "zset"}
    r.zadd(f"{keys.base}:ready:default", {"999999": 1})
    r.lpush(f"{keys.base}:wake:default", "1")
    r.hset(f"{keys.base}:popped:w", "1", "0 999999")
    r.sadd(f"{keys.base}:owners", "w")
    r.zadd(f"{keys.base}:popped-at", {"999999": 0})
    r.hdel(keys.mirror, "layout")  # a mirror built by pgq before per-queue slots
    report = reconcile()
    assert report.rebuilt and r.hget(keys.mirror, "layout") == Keys.LAYOUT
    assert not any(r.exists(k) for k in old)
    assert ready(r, keys) == ids


def popped_ids(popped: list[tuple[int, int, str]] | None) -> list[tuple[int, str]] | None:
    return None if popped is None else [(i, queue) for i, _, queue in popped]
