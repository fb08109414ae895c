"""Regression tests for the bugs the chaos suite (tests/chaos, issue 5) found.

1. A maintenance leader that stalls inside its transaction (SIGSTOP, a frozen
   VM) held the leader lock, and with it every worker's maintenance, for as
   long as it stalled: nobody rescued the jobs of dead workers meanwhile. Now
   the server ends a leader's session that idles in its transaction for a
   heartbeat interval.
2. A job failed with a short retry delay waited for the next safety-net poll
   (``poll_interval_seconds``) instead of running when due: the claim loop
   chose its idle wait before the acknowledger had written the failure, and a
   delayed retry sends no NOTIFY.
3. A hung Redis (SIGSTOP) held every Redis call for twice
   ``redis_timeout_seconds``: the client's one retry, meant for the dead
   sockets left by a Redis restart, also retried timeouts. A worker's Redis
   heartbeat runs on its Postgres heartbeat thread, so with short heartbeats
   live workers were declared stale while Redis hung.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import pgq
from factories import eventually, insert_job, insert_worker
from pgq.errors import RedisUnavailable
from pgq.queries import Queries, Rescue
from redis_service import OwnedRedis

pytestmark = pytest.mark.integration


class StallingQueries(Queries):
    """Blocks inside the leader's transaction, right after the stale sweep, until released."""

    def __init__(self, schema: str) -> None:
        super().__init__(schema)
        self.inside = threading.Event()
        self.release = threading.Event()

    def mark_stale_workers(self, conn: Any, stale_after_seconds: float) -> list[Rescue]:
        rescued = super().mark_stale_workers(conn, stale_after_seconds)
        self.inside.set()
        self.release.wait(30)
        return rescued


@pytest.fixture
def q(settings: pgq.Settings) -> Iterator[pgq.Queue]:
    queue = pgq.connect(settings=settings.replace(heartbeat_interval_seconds=0.3, stale_after_seconds=1.0,
                                                  poll_interval_seconds=30.0))
    yield queue
    queue.close()


def test_issue_5_a_leader_stalled_in_its_transaction_loses_the_lead(
        q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    stalling = StallingQueries("pgq")
    stalled = pgq.Maintenance(q.settings, q.pool, stalling)
    outcome: list[BaseException | pgq.MaintenanceReport] = []

    def lead() -> None:
        try:
            outcome.append(stalled.run_once())
        except BaseException as exc:  # checked below
            outcome.append(exc)

    thread = threading.Thread(target=lead, name="stalled-leader", daemon=True)
    thread.start()
    try:
        assert stalling.inside.wait(10)
        # A dead worker's job, while the leader is stalled holding the lock.
        dead = insert_worker(conn, last_heartbeat=conn.execute("SELECT now() - interval '1 hour'").fetchone()[0])
        job_id = insert_job(conn, status="running", worker_id=dead)
        other = pgq.Maintenance(q.settings, q.pool)
        report = eventually(lambda: (r := other.run_once()).leader and r, "another worker to take the lead")
        assert report.rescued_job_ids == [job_id]
    finally:
        stalling.release.set()
        thread.join(10)
    # The stalled leader's session was ended by the server: its round failed, nothing of it committed.
    (result,) = outcome
    assert isinstance(result, pgq.DatabaseError)
    assert "idle-in-transaction" in str(result)


def test_issue_5_a_retry_due_soon_runs_when_due_not_at_the_next_poll(q: pgq.Queue) -> None:
    attempts: list[float] = []

    @q.task(name="flaky", max_attempts=3)
    def flaky() -> str:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise pgq.Retry(after=0.2)
        return "second attempt"

    job_id = q.enqueue("flaky")
    worker = q.worker(queues=["default"], concurrency=1, install_signal_handlers=False, run_maintenance=False)
    thread = threading.Thread(target=worker.run, name="test-worker", daemon=True)
    thread.start()
    try:
        # Far less than the 30 s poll interval: only the retry's own due time can explain it.
        assert q.wait(job_id, timeout=10) == "second attempt"
    finally:
        worker.stop()
        thread.join(30)
    assert len(attempts) == 2 and attempts[1] - attempts[0] >= 0.2


def test_issue_5_a_hung_redis_fails_a_call_within_the_timeout_and_a_restart_is_retried(
        settings: pgq.Settings) -> None:
    from pgq.redis.client import RedisClient

    server = OwnedRedis().start()
    timeout = 1.0
    mirror = RedisClient(settings.replace(redis_url=server.url, redis_prefix="issue5-hung",
                                          redis_timeout_seconds=timeout))
    try:
        mirror.heartbeat("w", {})  # a pooled connection exists
        # A restart kills every pooled socket: the one retry on a connection error hides it.
        server.restart()
        mirror.heartbeat("w", {})
        assert mirror.failures == 0
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(RedisUnavailable, match="Timeout"):
                mirror.heartbeat("w", {})
            elapsed = time.monotonic() - started
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        # One timeout, not two (the bug took 2.0 s here).
        assert timeout <= elapsed < 1.6 * timeout, elapsed
    finally:
        mirror.close()
        server.stop()
