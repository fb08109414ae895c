"""Issue 10, periodic jobs in Redis mode: a tick's job, enqueued in SQL by the
maintenance leader, reaches the mirror in the same maintenance run (the
reconciler pass that follows the round) and a worker claims it from Redis.

The workers poll Postgres only every 600 s (``rsettings``), so the job that runs
was delivered by Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import redis

import pgq
from pgq.maintenance import Maintenance
from pgq.redis.keys import Keys

pytestmark = [pytest.mark.integration, pytest.mark.redis]


@pytest.fixture
def q(rsettings: pgq.Settings) -> Iterator[pgq.Queue]:
    queue = pgq.connect(settings=rsettings, strict_tasks=False)
    yield queue
    queue.close()


def test_a_tick_reaches_the_mirror_and_a_worker_runs_it_once(
    q: pgq.Queue, rsettings: pgq.Settings, conn: psycopg.Connection[Any],
) -> None:
    r = redis.Redis.from_url(rsettings.redis_url or "", decode_responses=True)
    keys = Keys(rsettings.redis_prefix, rsettings.schema)
    ran: list[int] = []

    @q.periodic("*/5 * * * *", name="tick", queue="a", payload={"n": 1})
    def tick(n: int) -> None:
        ran.append(n)

    worker = q.worker(queues=["a"], install_signal_handlers=False, run_maintenance=False)
    assert worker.run_once() == 0  # registers the worker and the schedule
    conn.execute("UPDATE pgq.schedules SET next_tick = date_trunc('minute', now()) - interval '1 minute'")
    maintenance = Maintenance(q.settings, q.pool, redis=q.redis)
    report = maintenance.run_once()
    assert report.cron is not None
    ids = report.cron.enqueued["tick"]
    assert len(ids) == 1
    assert [int(i) for i in r.zrange(keys.ready("a"), 0, -1)] == ids
    assert maintenance.run_once().cron.enqueued == {}  # type: ignore[union-attr]
    assert worker.run_once() == 1
    assert ran == [1]
    assert worker.counters.extra["redis_claimed"] == 1
    r.close()
