"""A burst run in Redis mode ends when Postgres has no job left, not when a claim
from Redis comes back empty (issue 9, found while measuring: `run(burst=True)`
with `redis_url` set stopped after about 3,000 of 20,000 jobs).

Redis only suggests ids. A claim whose popped ids were all stale (jobs another
worker took through Postgres while the mirror still listed them, e.g. while
the mirror was being rebuilt) claims nothing, although runnable jobs wait
behind them; the burst run read that as "no job left". It now asks Postgres
(the earliest due job of its queues) before it ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import redis

import pgq
from pgq.redis.keys import Keys

pytestmark = [pytest.mark.integration, pytest.mark.redis]


@pytest.fixture
def q(rsettings: pgq.Settings) -> Iterator[pgq.Queue]:
    queue = pgq.connect(settings=rsettings, strict_tasks=False)
    yield queue
    queue.close()


def statuses(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return {str(s): int(n) for s, n in conn.execute("SELECT status::text, count(*) FROM pgq.jobs GROUP BY 1")}


def test_burst_runs_the_jobs_behind_stale_ids_in_redis(q: pgq.Queue, rsettings: pgq.Settings,
                                                       conn: psycopg.Connection[Any]) -> None:
    ran: list[int] = []

    @q.task(name="t")
    def t(n: int) -> None:
        ran.append(n)

    q.enqueue_many([{"task": "t", "payload": {"n": n}} for n in range(300)])
    # The first 250 were run by a Postgres-path worker meanwhile: Redis still lists them.
    conn.execute("UPDATE pgq.jobs SET status = 'completed', attempts = 1, finished_at = now()"
                 " WHERE id IN (SELECT id FROM pgq.jobs ORDER BY id LIMIT 250)")
    client = redis.Redis.from_url(rsettings.redis_url or "", decode_responses=True)
    try:
        assert client.zcard(Keys(rsettings.redis_prefix, rsettings.schema).ready("default")) == 300
    finally:
        client.close()
    worker = q.worker(queues=["default"], concurrency=4, batch_size=10, install_signal_handlers=False,
                      run_maintenance=False)
    worker.run(burst=True)
    assert sorted(ran) == list(range(250, 300))
    assert statuses(conn) == {"completed": 300}
    assert worker.counters.extra["redis_dropped"] >= 40  # a claim met nothing but stale ids


def test_burst_with_a_mirror_built_while_it_runs_runs_every_job(q: pgq.Queue, rsettings: pgq.Settings,
                                                                conn: psycopg.Connection[Any]) -> None:
    """The reported case: the worker claims through Postgres while its reconciler builds
    the mirror from the same jobs, then pops the ids of jobs it already ran."""
    @q.task(name="noop")
    def noop() -> None:
        return None

    client = redis.Redis.from_url(rsettings.redis_url or "", decode_responses=True)
    try:
        for key in client.scan_iter(match="{" + rsettings.redis_prefix + ":*"):
            client.delete(key)  # the mirror is not built
    finally:
        client.close()
    for _ in range(4):
        q.enqueue_many([{"task": "noop"}] * 2500)
    worker = q.worker(queues=["default"], concurrency=16, install_signal_handlers=False)
    worker.run(burst=True)
    assert statuses(conn) == {"completed": 10_000}
