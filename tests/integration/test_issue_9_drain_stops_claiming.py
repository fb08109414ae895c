"""Issue 9, defect 5: a drain asked in the database is honoured by the worker.

``pgq.drain_worker(id)`` (or a DBA's ``UPDATE workers SET status = 'draining'``)
makes the next claim answer PQ005 (``pgq.WorkerDraining``). The worker then
claims nothing more and stops as on SIGTERM. Before, the refusal was taken for
"marked stale": it registered again and claimed again at once, forever (57
"claim failed" warnings in 3 s, as a DBA saw it).
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

import pgq
from pgq.queries import Queries

pytestmark = pytest.mark.integration

WAIT = 20.0


class CountedClaims(Queries):
    def __init__(self, schema: str) -> None:
        super().__init__(schema)
        self.claims = 0

    def get_runnable_jobs(self, *args: Any, **kwargs: Any) -> Any:
        self.claims += 1
        return super().get_runnable_jobs(*args, **kwargs)


@pytest.mark.parametrize("how", ["drain_worker()", "UPDATE"])
def test_a_worker_drained_in_the_database_claims_no_more_and_returns(
    settings: pgq.Settings, conn: psycopg.Connection[Any], how: str,
) -> None:
    quick = settings.replace(listen=False, poll_interval_seconds=0.05)
    q = pgq.Queue(quick, strict_tasks=False)
    counted = CountedClaims(quick.schema)
    q.queries = counted
    ran = threading.Event()

    @q.task(name="drain.me")
    def drain_me() -> None:
        ran.set()

    w = q.worker(concurrency=2, install_signal_handlers=False, run_maintenance=False)
    runner = threading.Thread(target=w.run)
    runner.start()
    try:
        first = q.enqueue("drain.me")
        assert q.wait(first, timeout=WAIT) is None and ran.is_set()
        if how == "UPDATE":
            conn.execute("UPDATE pgq.workers SET status = 'draining' WHERE id = %s", (w.id,))
        else:
            assert conn.execute("SELECT pgq.drain_worker(%s)", (w.id,)).fetchone() == (True,)
        before = counted.claims
        runner.join(timeout=WAIT)  # before: it never returned (claimed, registered again, forever)
        assert not runner.is_alive()
        assert counted.claims - before <= 2  # at most the claim refused (and one already in flight)
        later = q.enqueue("drain.me")
        status = conn.execute("SELECT status::text FROM pgq.jobs WHERE id = %s", (later,)).fetchone()
        assert status == ("queued",)  # nothing claimed after the drain
        row = conn.execute("SELECT status::text FROM pgq.workers WHERE id = %s", (w.id,)).fetchone()
        assert row == ("stopped",)  # deregistered
    finally:
        w.stop()
        runner.join(timeout=WAIT)
        q.close()
