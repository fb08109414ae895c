"""Job graphs in Redis mode: a waiting child is not mirrored; once its last parent
completes, the reconciler's next pass mirrors it (it was released without a push)
and a worker takes it from Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

import pgq
from pgq.redis.keys import Keys
from pgq.redis.reconciler import Reconciler

pytestmark = [pytest.mark.integration, pytest.mark.redis]


@pytest.fixture
def q(rsettings: pgq.Settings) -> Iterator[pgq.Queue]:
    queue = pgq.connect(settings=rsettings, strict_tasks=False)
    yield queue
    queue.close()


@pytest.fixture
def r(rsettings: pgq.Settings) -> Iterator[Any]:
    client = redis.Redis.from_url(rsettings.redis_url or "", decode_responses=True)
    yield client
    client.close()


def ready(r: Any, q: pgq.Queue) -> list[int]:
    keys = Keys(q.settings.redis_prefix, q.settings.schema)
    return [int(i) for i in r.zrange(keys.ready("default"), 0, -1)]


def test_a_released_child_reaches_redis_through_the_reconciler_and_runs(q: pgq.Queue, r: Any) -> None:
    ran: list[str] = []

    @q.task(name="step")
    def step(name: str) -> None:
        ran.append(name)

    parent, child = q.enqueue_many([step.spec({"name": "parent"}),
                                    step.spec({"name": "child"}, depends_on=[pgq.ref(0)])])
    assert ready(r, q) == [parent]  # the waiting child is not mirrored
    assert q.redis is not None
    reconciler = Reconciler(q.settings, q.pool, q.redis)
    reconciler.run_once()  # its horizon passes the child's enqueue time: release must move run_at
    assert ready(r, q) == [parent]
    worker = q.worker(install_signal_handlers=False, run_maintenance=False, queues=["default"])
    assert worker.run_once() == 1
    assert ran == ["parent"] and q.get(child).status is pgq.JobStatus.QUEUED
    report = reconciler.run_once()
    assert report.added == 1 and ready(r, q) == [child]
    assert worker.run_once() == 1
    assert ran == ["parent", "child"] and q.get(child).status is pgq.JobStatus.COMPLETED
    assert ready(r, q) == []
