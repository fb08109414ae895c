"""Redis failing under a running queue: flushed, killed and restarted, down at
start, paused. Each scenario runs real workers against a redis-server owned by
the test and ends with the same audit: every job completed, each exactly once.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pgq
from factories import eventually
from redis_service import OwnedRedis, unique_prefix

pytestmark = [pytest.mark.integration, pytest.mark.redis]

JOBS = 3000


class Counting:
    """A queue whose task ``t`` records every execution of every job."""

    def __init__(self, settings: pgq.Settings) -> None:
        self.q = pgq.connect(settings=settings, strict_tasks=False)
        self.runs: collections.Counter[int] = collections.Counter()
        self.lock = threading.Lock()

        @self.q.task(name="t")
        def t(n: int) -> None:
            with self.lock:
                self.runs[n] += 1

    @property
    def done(self) -> int:
        with self.lock:
            return len(self.runs)

    def enqueue(self, start: int, count: int) -> list[int]:
        return self.q.enqueue_many([{"task": "t", "payload": {"n": n}} for n in range(start, start + count)])


def workers(c: Counting, running: Callable[..., Any], n: int = 2) -> list[Any]:
    """``n`` workers with maintenance on: one of them leads the mirror reconciler."""
    return [running(c.q.worker(queues=["default"], concurrency=8, install_signal_handlers=False))
            for _ in range(n)]


def audit(conn: psycopg.Connection[Any], c: Counting, total: int) -> None:
    """Every job completed, each handler ran exactly once, one completed execution per job."""
    eventually(lambda: conn.execute("SELECT count(*) FROM pgq.jobs WHERE status = 'completed'").fetchone()
               == (total,), f"all {total} jobs to complete", timeout=60)
    assert sorted(c.runs) == list(range(total))
    assert set(c.runs.values()) == {1}, {n: k for n, k in c.runs.items() if k != 1}
    assert conn.execute("SELECT count(*), count(DISTINCT job_id) FROM pgq.job_executions"
                        " WHERE outcome = 'completed'").fetchone() == (total, total)
    assert conn.execute("SELECT max(attempts) FROM pgq.jobs").fetchone() == (1,)


def extra(runs: list[Any], name: str) -> int:
    return sum(r.worker.counters.extra.get(name, 0) for r in runs)


def test_flushall_in_the_middle_of_thousands_of_jobs(
    owned_settings: pgq.Settings, owned_redis: OwnedRedis, conn: psycopg.Connection[Any],
    running: Callable[..., Any],
) -> None:
    c = Counting(owned_settings)
    c.enqueue(0, JOBS)
    runs = workers(c, running)
    eventually(lambda: c.done >= JOBS // 4, "a quarter of the jobs to run")
    with owned_redis.client() as r:
        r.flushall()
    audit(conn, c, JOBS)
    # The mirror was rebuilt by the reconciler leader; new work goes through Redis again.
    with owned_redis.client() as r:
        eventually(lambda: r.exists("{" + owned_settings.redis_prefix + ":pgq}:mirror"), "the mirror to be rebuilt")
    before = extra(runs, "redis_claimed")
    c.enqueue(JOBS, 200)
    audit(conn, c, JOBS + 200)
    assert extra(runs, "redis_claimed") > before
    for r in runs:
        r.stop()
    c.q.close()


def test_redis_killed_and_restarted_mid_run(
    owned_settings: pgq.Settings, owned_redis: OwnedRedis, conn: psycopg.Connection[Any],
    running: Callable[..., Any],
) -> None:
    c = Counting(owned_settings)
    c.enqueue(0, JOBS)
    runs = workers(c, running)
    eventually(lambda: c.done >= JOBS // 4, "a quarter of the jobs to run")
    owned_redis.kill()
    # Enqueue never fails because Redis is down: Postgres committed, so the jobs exist.
    c.enqueue(JOBS, 500)
    eventually(lambda: c.done >= JOBS, "the workers to carry on without Redis (Postgres path)")
    assert extra(runs, "redis_unavailable") > 0
    owned_redis.start()  # back, empty (no persistence)
    with owned_redis.client() as r:
        eventually(lambda: r.exists("{" + owned_settings.redis_prefix + ":pgq}:mirror"),
                   "the reconciler to rebuild the mirror", timeout=30)
    before = extra(runs, "redis_claimed")
    c.enqueue(JOBS + 500, 300)
    audit(conn, c, JOBS + 800)
    assert extra(runs, "redis_claimed") > before  # back on Redis, no operator action
    for r in runs:
        r.stop()
    c.q.close()


def test_redis_down_when_workers_start(settings: pgq.Settings, conn: psycopg.Connection[Any],
                                       running: Callable[..., Any]) -> None:
    server = OwnedRedis()  # its port is free: nothing answers there yet
    prefix = unique_prefix()
    down = settings.replace(redis_url=server.url, redis_prefix=prefix, poll_interval_seconds=0.2,
                            heartbeat_interval_seconds=0.5, stale_after_seconds=1.0,
                            redis_reconcile_interval_seconds=0.2, redis_poll_interval_seconds=600.0)
    c = Counting(down)
    try:
        started = time.monotonic()
        c.enqueue(0, 100)
        c.q.enqueue("t", {"n": 100})
        assert time.monotonic() - started < 5  # a refused connection fails fast
        runs = workers(c, running)
        audit(conn, c, 101)  # all through the Postgres path
        assert extra(runs, "redis_unavailable") > 0 and extra(runs, "redis_claimed") == 0
        server.start()
        with server.client() as r:
            eventually(lambda: r.exists("{" + prefix + ":pgq}:mirror"), "the mirror to be built", timeout=30)
        c.enqueue(101, 100)
        audit(conn, c, 201)
        assert extra(runs, "redis_claimed") > 0
        for r in runs:
            r.stop()
    finally:
        c.q.close()
        server.stop()


def test_a_paused_redis_never_stalls_producers_or_workers(
    owned_settings: pgq.Settings, owned_redis: OwnedRedis, conn: psycopg.Connection[Any],
    running: Callable[..., Any],
) -> None:
    c = Counting(owned_settings)
    runs = workers(c, running, n=1)
    c.enqueue(0, 10)
    audit(conn, c, 10)
    pause_seconds = 8.0
    with owned_redis.client() as r:
        r.execute_command("CLIENT", "PAUSE", int(pause_seconds * 1000), "ALL")
    paused_until = time.monotonic() + pause_seconds
    c.enqueue(10, 50)  # the push times out after redis_timeout_seconds; the enqueue succeeds
    audit(conn, c, 60)
    # Every job ran while Redis still answered nobody: bounded timeouts, Postgres path.
    assert time.monotonic() < paused_until
    assert extra(runs, "redis_unavailable") > 0
    owned_redis.kill()  # rather than wait for the pause to end
    for r in runs:
        r.stop()
    c.q.close()

