"""Issue 10, aging under a sustained high-priority load (both modes).

One worker (one runner) is kept busy by a producer that holds a backlog of
priority-5 jobs. A priority-1 job enqueued meanwhile would wait as long as the
load lasts without aging; with an aging step of 0.2 s it reaches band 5 after
4 steps plus a maintenance round (0.1 s), and then runs before the priority-5
jobs that became due after it. The test checks the bound from the database's
own timestamps, and that the worker chose it while priority-5 jobs waited.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import factories
import pgq

pytestmark = [pytest.mark.integration, pytest.mark.both_modes]

STEP, MAINTENANCE, BACKLOG = 0.2, 0.1, 10
# 4 steps + a maintenance round + draining a backlog of 10 x 10 ms, with room for a loaded machine.
BOUND_SECONDS = 4 * STEP + MAINTENANCE + 2.0


def test_a_priority_1_job_starts_within_the_aging_bound(
    settings: pgq.Settings, conn: psycopg.Connection[Any], running: Callable[..., factories.RunningWorker],
) -> None:
    q = pgq.connect(settings=settings.replace(maintenance_interval_seconds=MAINTENANCE, poll_interval_seconds=0.05,
                                              heartbeat_interval_seconds=0.5), strict_tasks=False)
    stop = threading.Event()
    producer: threading.Thread | None = None
    try:
        @q.task(name="busy", queue="work")
        def busy() -> None:
            stop.wait(0.01)  # the job's work

        q.set_queue_policy("work", aging_step=STEP)

        def produce() -> None:
            with psycopg.connect(settings.database_url, autocommit=True) as own:
                while not stop.is_set():
                    waiting = own.execute("SELECT count(*) FROM pgq.jobs WHERE priority = 5"
                                          " AND status = 'queued'").fetchone()
                    if waiting is not None and waiting[0] < BACKLOG:
                        q.enqueue_many([{"task": "busy", "priority": 5}] * (BACKLOG - waiting[0]))
                    stop.wait(0.005)

        producer = threading.Thread(target=produce, name="producer", daemon=True)
        producer.start()
        running(q.worker(queues=["work"], concurrency=1, install_signal_handlers=False))
        factories.eventually(lambda: conn.execute("SELECT count(*) >= 20 FROM pgq.jobs WHERE status = 'completed'")
                             .fetchone()[0], "the worker busy with priority-5 jobs")
        low = q.enqueue("busy", priority=1)
        factories.eventually(lambda: conn.execute("SELECT status = 'completed' FROM pgq.jobs WHERE id = %s",
                                                  (low,)).fetchone()[0], "the priority-1 job run", timeout=30)
    finally:
        stop.set()
        if producer is not None:
            producer.join()  # its last enqueue ends before the queue closes
        q.close()
    waited, passed_over = conn.execute(
        "SELECT extract(epoch FROM j.started_at - j.created_at),"
        "       (SELECT count(*) FROM pgq.jobs AS h WHERE h.priority = 5 AND h.created_at < j.started_at"
        "          AND h.started_at > j.started_at)"
        " FROM pgq.jobs AS j WHERE j.id = %s", (low,)).fetchone()
    assert waited <= BOUND_SECONDS
    assert passed_over > 0  # it ran while priority-5 jobs were waiting: aging, not an idle moment
