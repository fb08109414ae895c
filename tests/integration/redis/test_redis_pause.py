"""Issue 10, pause and resume in Redis mode: the mirror does not offer a paused
queue's ids, workers run none of its jobs, and after the resume the reconciler
offers every one of them again (none lost from the mirror).

The workers poll Postgres only every 600 s (``rsettings``), so a job that runs
after the resume was delivered by Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import redis

import factories
import pgq
from pgq.redis.keys import Keys
from pgq.redis.reconciler import Reconciler

pytestmark = [pytest.mark.integration, pytest.mark.redis]


@pytest.fixture
def q(rsettings: pgq.Settings) -> Iterator[pgq.Queue]:
    queue = pgq.connect(settings=rsettings, strict_tasks=False)
    yield queue
    queue.close()


def ready(r: Any, keys: Keys, queue: str) -> list[int]:
    return sorted(int(i) for i in r.zrange(keys.ready(queue), 0, -1))


def test_a_paused_queue_is_not_offered_and_every_id_comes_back_after_resume(
    q: pgq.Queue, rsettings: pgq.Settings, conn: psycopg.Connection[Any],
) -> None:
    r = redis.Redis.from_url(rsettings.redis_url or "", decode_responses=True)
    keys = Keys(rsettings.redis_prefix, rsettings.schema)
    assert q.redis is not None
    reconciler = Reconciler(q.settings, q.pool, q.redis)
    ran: list[int] = []

    @q.task(name="t", queue="a")
    def t(n: int) -> None:
        ran.append(n)

    before = q.enqueue_many([{"task": "t", "queue": "a", "payload": {"n": n}} for n in range(3)])
    assert ready(r, keys, "a") == sorted(before)  # pushed at enqueue
    q.pause_queue("a")
    during = q.enqueue_many([{"task": "t", "queue": "a", "payload": {"n": n}} for n in range(3, 5)])
    reconciler.run_once(full=True)
    assert ready(r, keys, "a") == []  # a full pass removes what it must not offer
    worker = q.worker(queues=["a"], install_signal_handlers=False, run_maintenance=False)
    assert worker.run_once() == 0
    assert ran == []

    reconciler.run_once()  # a pass that is not due for a full sweep offers nothing of "a" either
    assert ready(r, keys, "a") == []
    q.resume_queue("a")
    reconciler.run_once(quick=True)
    assert ready(r, keys, "a") == sorted(before + during)
    while worker.run_once():
        pass
    assert sorted(ran) == [0, 1, 2, 3, 4]
    assert worker.counters.extra["redis_claimed"] == 5
    assert set(factories.statuses(conn, before + during).values()) == {"completed"}
    r.close()


def test_ids_a_worker_popped_while_paused_are_offered_again_after_resume(
    q: pgq.Queue, rsettings: pgq.Settings, conn: psycopg.Connection[Any],
) -> None:
    r = redis.Redis.from_url(rsettings.redis_url or "", decode_responses=True)
    keys = Keys(rsettings.redis_prefix, rsettings.schema)
    assert q.redis is not None
    reconciler = Reconciler(q.settings, q.pool, q.redis)
    q.pause_queue("a")
    ids = q.enqueue_many([{"task": "t", "queue": "a"}] * 3)
    assert ready(r, keys, "a") == sorted(ids)  # enqueue pushes before anyone looks at the pause
    worker = q.worker(queues=["a"], install_signal_handlers=False, run_maintenance=False)
    assert worker.run_once() == 0  # popped, refused by the claim in Postgres, dropped
    assert set(factories.statuses(conn, ids).values()) == {"queued"}
    q.resume_queue("a")
    reconciler.run_once(quick=True)
    assert ready(r, keys, "a") == sorted(ids)
    r.close()
