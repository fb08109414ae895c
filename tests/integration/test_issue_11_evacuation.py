"""Issue 11, item 5: health-aware claiming and evacuation, with a real worker (both modes).

A degraded worker claims smaller batches; a failing one evacuates itself (it
records why in ``workers``, stops claiming, hands its work back and returns
from ``run()``); an operator evacuates one with ``Queue.evacuate_worker`` or
``pgq workers evacuate``, and its running jobs get ``evacuation_grace_seconds``
before they are given back; ``pgq worker`` then exits with code 75. The
process-level scenarios (a degrading handler on one of three workers) are in
tests/chaos/test_chaos_evacuation.py.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

import factories
import pgq
from factories import RunningWorker, eventually
from pgq.cli import main
from pgq.health.evacuation import EXIT_EVACUATED

pytestmark = [pytest.mark.integration, pytest.mark.both_modes]

WAIT = 20.0


def jobs_by_status(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return {s: n for s, n in conn.execute("SELECT status::text, count(*) FROM pgq.jobs GROUP BY 1").fetchall()}


def test_a_degraded_worker_claims_half_a_batch_and_a_failing_one_a_single_job(settings: pgq.Settings) -> None:
    # Heartbeats are sent by the test (worker.heartbeat()); no background threads run.
    q = pgq.connect(settings=settings.replace(listen=False, heartbeat_interval_seconds=50.0,
                                                 stale_after_seconds=120.0), strict_tasks=False)
    mode = ["ok"]  # "ok", "all" (every job fails) or "half" (every other one)
    runs = itertools.count(1)  # next() is atomic: the runner's threads share it
    pause = threading.Event()

    @q.task(name="maybe", max_attempts=1)
    def maybe() -> None:
        pause.wait(0.005)  # 5 ms of "work": a run time steady enough for the latency baseline
        if mode[0] == "all" or (mode[0] == "half" and next(runs) % 2):
            raise RuntimeError("degraded on purpose")

    try:
        q.enqueue_many([{"task": "maybe"} for _ in range(60)])
        worker = q.worker(queues=["default"], concurrency=8, batch_size=8, install_signal_handlers=False,
                          run_maintenance=False)
        claimed, scores = [], []
        # Healthy; 4 of 4 failing (score 0.2: failing); 1 of 1 failing (too few to score: the
        # latest stays 0.2); 1 of 1 succeeding (1.0); 4 of 8 failing (1 - 1.4 * 4 / (8 + 3) = 0.49:
        # degraded); healthy again, twice.
        steps = (("ok", None), ("all", 4), ("all", None), ("ok", None), ("half", None), ("ok", None), ("ok", None))
        for what, max_jobs in steps:
            mode[0] = what
            claimed.append(worker.run_once(max_jobs))
            worker.heartbeat()
            scores.append(round(worker.health.latest or 0, 2))
    finally:
        q.close()
    assert scores == [1.0, 0.2, 0.2, 1.0, 0.49, 1.0, 1.0], scores
    # The claim after each heartbeat follows the score it carried: failing 1, degraded half of 8.
    assert claimed == [8, 4, 1, 1, 8, 4, 8], claimed
    assert worker.evacuation is None


def broken_queue(settings: pgq.Settings, interval: float = 50.0, **retry: Any) -> pgq.Queue:
    """A queue whose task ``broken`` always raises; heartbeats are sent by the test (``interval``:
    the one the settings say), and one failing sample is enough for the policy to propose an
    evacuation."""
    s = settings.replace(listen=False, heartbeat_interval_seconds=interval, stale_after_seconds=120.0,
                         evacuation_after_samples=1, evacuation_horizon_seconds=0.0)
    q = pgq.connect(settings=s, strict_tasks=False)

    @q.task(name="broken", max_attempts=retry.pop("max_attempts", 1), **retry)
    def broken() -> None:
        raise RuntimeError("always fails")

    return q


def fail_four(q: pgq.Queue, worker: pgq.Worker) -> None:
    """Four jobs of ``broken`` run on ``worker`` and fail; its heartbeat then sends a failing sample."""
    q.enqueue_many([{"task": "broken"} for _ in range(4)])
    assert worker.run_once(4) == 4  # (a failing worker would claim 1 by itself)
    worker.heartbeat()  # 4 of 4 failed: score 0.2, failing
    assert (worker.health.latest or 1) < 0.3


def test_a_failing_worker_stays_while_its_peers_fail_too_and_evacuates_once_they_are_healthy(
        settings: pgq.Settings, conn: psycopg.Connection[Any]) -> None:
    q = broken_queue(settings)
    peer = factories.insert_worker(conn)  # another worker of queue default
    try:
        worker = q.worker(queues=["default"], concurrency=4, batch_size=4, install_signal_handlers=False,
                          run_maintenance=False)
        # The peer's samples: failing too (a shared cause), then busy and healthy.
        factories.insert_health_sample(conn, peer, completed=2, failed=10, health_score=0.1)
        fail_four(q, worker)
        assert worker.evacuation is None
        for _ in range(2):
            factories.insert_health_sample(conn, peer, completed=40, failed=0, health_score=1.0)
        fail_four(q, worker)
    finally:
        q.close()
    assert worker.evacuation == "health score 0.20 below 0.3 in 2 consecutive samples"
    assert conn.execute("SELECT status::text, evacuated_by FROM pgq.workers WHERE id = %s",
                        (worker.id,)).fetchone() == ("draining", "worker")


def test_a_worker_whose_jobs_fail_as_often_on_its_busy_peers_stays(
        settings: pgq.Settings, conn: psycopg.Connection[Any]) -> None:
    # Poison jobs spread over a fleet: this worker's failing samples are bad luck, not its
    # process (the defect: a healthy worker of a small fleet evacuated itself).
    q = broken_queue(settings)
    peer = factories.insert_worker(conn)
    factories.insert_health_sample(conn, peer, completed=30, failed=30, health_score=0.6)
    try:
        worker = q.worker(queues=["default"], concurrency=4, batch_size=4, install_signal_handlers=False,
                          run_maintenance=False)
        fail_four(q, worker)
        fail_four(q, worker)
        assert worker.evacuation is None
        # Peers that are not active, or whose samples left the window, are not compared with.
        conn.execute("UPDATE pgq.workers SET status = 'stale', stopped_at = now() WHERE id = %s", (peer,))
        fail_four(q, worker)
    finally:
        q.close()
    assert worker.evacuation == "health score 0.20 below 0.3 in 3 consecutive samples"


def test_a_failing_sample_that_committed_late_is_still_weighed_against_the_peers(
        settings: pgq.Settings, conn: psycopg.Connection[Any], connect: Callable[..., psycopg.Connection[Any]]
) -> None:
    # The defect (a CI run at load, 2026-12-03): the check read the worker's samples of the last
    # (after_samples + 0.5) heartbeat intervals of database time. A heartbeat that waited (on a
    # loaded machine, for a lock, for the pool) committed a sample logged before that window; the
    # worker then had no outcomes of its own there, looked healthy against its busy peers, and
    # stayed. Its own evidence is the samples its rule counted, however long they took to land.
    q = broken_queue(settings, interval=0.5)  # the window was 0.75 s
    peer = factories.insert_worker(conn)
    locker = connect(autocommit=False)
    watcher = connect()
    failures: list[BaseException] = []

    def release_after_a_wait() -> None:
        try:  # the heartbeat has waited 1.5 s on the worker's row; the peer is busy and healthy meanwhile
            eventually(lambda: watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query_start < clock_timestamp() - interval '1.5 s'"
            ).fetchone()[0], "the heartbeat to wait 1.5 s on the worker's row")
            factories.insert_health_sample(watcher, peer, completed=40, failed=0, health_score=1.0)
        except BaseException as exc:  # reported below; the lock goes in any case
            failures.append(exc)
        finally:
            locker.rollback()

    try:
        worker = q.worker(queues=["default"], concurrency=4, batch_size=4, install_signal_handlers=False,
                          run_maintenance=False)
        q.enqueue_many([{"task": "broken"} for _ in range(4)])
        assert worker.run_once(4) == 4
        locker.execute("SELECT 1 FROM pgq.workers WHERE id = %s FOR UPDATE", (worker.id,))
        releaser = threading.Thread(target=release_after_a_wait)
        releaser.start()
        worker.heartbeat()  # 4 of 4 failed, logged when the statement began
        releaser.join()
    finally:
        q.close()
    assert failures == []
    late = conn.execute("SELECT extract(epoch FROM now() - logged_at) FROM pgq.worker_health_logs"
                        " WHERE worker_id = %s", (worker.id,)).fetchone()
    assert late is not None and late[0] >= 1.5  # outside the old window when the check ran
    assert worker.evacuation == "health score 0.20 below 0.3 in 1 consecutive samples"


def test_poison_jobs_that_failed_on_another_worker_do_not_evacuate_a_worker_without_busy_peers(
        settings: pgq.Settings, conn: psycopg.Connection[Any]) -> None:
    q = broken_queue(settings, max_attempts=3, retry=pgq.Backoff(base=0.001, jitter=0.0))
    try:
        first = q.worker(queues=["default"], concurrency=4, batch_size=4, install_signal_handlers=False,
                         run_maintenance=False)
        second = q.worker(queues=["default"], concurrency=4, batch_size=4, install_signal_handlers=False,
                          run_maintenance=False)
        q.enqueue_many([{"task": "broken"} for _ in range(4)])
        assert first.run_once(4) == 4  # their first attempts fail on another worker (no sample sent)
        poison = [job_id for (job_id,) in conn.execute("SELECT id FROM pgq.jobs WHERE attempts = 1")]
        eventually(lambda: second.run_once(4) == 4, "the retries claimed by the second worker")
        second.heartbeat()
        assert (second.health.latest or 1) < 0.3 and second.evacuation is None
        assert len(poison) == 4 and factories.statuses(conn, poison) == dict.fromkeys(poison, "retrying")
        # Jobs that fail only here are this worker's evidence: 4 poison + 8 of its own.
        fail_four(q, second)
        assert second.evacuation is None  # 4 of its 8 failures failed elsewhere too
        fail_four(q, second)
    finally:
        q.close()
    assert second.evacuation == "health score 0.20 below 0.3 in 3 consecutive samples"


def test_a_failing_worker_evacuates_itself_and_hands_its_jobs_back(
        settings: pgq.Settings, conn: psycopg.Connection[Any], running: Callable[..., RunningWorker]) -> None:
    s = settings.replace(heartbeat_interval_seconds=0.1, stale_after_seconds=10.0, poll_interval_seconds=0.05,
                         redis_poll_interval_seconds=0.05, evacuation_after_samples=2,
                         evacuation_grace_seconds=5.0)
    q = pgq.connect(settings=s, strict_tasks=False)

    @q.task(name="broken", max_attempts=1000, retry=pgq.Backoff(base=30.0, jitter=0.0))
    def broken() -> None:
        raise RuntimeError("always fails")

    try:
        q.enqueue_many([{"task": "broken"} for _ in range(200)])
        worker = q.worker(queues=["default"], concurrency=2, install_signal_handlers=False, run_maintenance=False)
        running(worker).join()  # returns on its own: evacuated
    finally:
        q.close()
    assert worker.evacuation is not None and worker.evacuation.startswith("health score"), worker.evacuation
    row = conn.execute("SELECT status::text, evacuated_by, evacuation_reason FROM pgq.workers WHERE id = %s",
                       (worker.id,)).fetchone()
    assert row == ("stopped", "worker", worker.evacuation)
    # Evacuated at the second failing sample in a row (the samples before it may be merely
    # degraded: a failing worker claims one job at a time, so an interval holds few outcomes).
    samples = conn.execute("SELECT l.health_score FROM pgq.worker_health_logs AS l JOIN pgq.workers AS w"
                           " ON w.id = l.worker_id WHERE l.worker_id = %s AND l.metric_type = 'heartbeat'"
                           " AND l.logged_at <= w.evacuated_at ORDER BY l.logged_at, l.id", (worker.id,)).fetchall()
    assert [score < 0.3 for (score,) in samples[-2:]] == [True, True], samples
    # Nothing lost, nothing left running, every job unfinished is claimable again.
    statuses = jobs_by_status(conn)
    assert sum(statuses.values()) == 200 and set(statuses) <= {"queued", "retrying"}, statuses


def test_an_operator_evacuation_gives_back_what_still_runs_after_the_evacuation_grace(
        settings: pgq.Settings, conn: psycopg.Connection[Any], running: Callable[..., RunningWorker]) -> None:
    # No LISTEN, heartbeats a minute apart: the test sends the heartbeat that tells the worker.
    s = settings.replace(listen=False, poll_interval_seconds=60.0, redis_poll_interval_seconds=60.0,
                         heartbeat_interval_seconds=50.0, stale_after_seconds=120.0, shutdown_grace_seconds=60.0,
                         evacuation_grace_seconds=0.2)
    q = pgq.connect(settings=s, strict_tasks=False)
    started, finish = threading.Event(), threading.Event()

    @q.task(name="long")
    def long() -> str:
        started.set()
        finish.wait(WAIT)
        return "finished"

    try:
        job_id = q.enqueue("long")
        worker = q.worker(queues=["default"], concurrency=1, install_signal_handlers=False, run_maintenance=False)
        r = running(worker)
        assert started.wait(WAIT)
        with pytest.raises(pgq.ValidationError):
            q.evacuate_worker(worker.id, "  ")
        assert q.evacuate_worker(worker.id, "host maintenance") is True
        assert q.evacuate_worker(worker.id, "again") is False
        worker.heartbeat()  # answers 'draining'
        r.join()  # within the evacuation's 0.2 s grace, not the shutdown's 60 s: the job still runs
        job = q.get(job_id)
    finally:
        finish.set()
        q.close()
    assert worker.evacuation == "host maintenance"
    assert job.status in (pgq.JobStatus.QUEUED, pgq.JobStatus.RETRYING), job  # runs again
    outcome = conn.execute("SELECT outcome::text FROM pgq.job_executions WHERE job_id = %s", (job_id,)).fetchall()
    assert outcome == [("interrupted",)]
    assert conn.execute("SELECT status::text, evacuated_by FROM pgq.workers WHERE id = %s",
                        (worker.id,)).fetchone() == ("stopped", "operator")


APP = """
import pgq

q = pgq.connect()


@q.task(name="evac_app.noop", queue="evac")
def noop() -> str:
    return "done"
"""


@pytest.mark.slow  # a process
def test_pgq_workers_evacuate_makes_a_pgq_worker_process_exit_75(
        settings: pgq.Settings, db_url: str, conn: psycopg.Connection[Any], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "evac_app.py").write_text(textwrap.dedent(APP))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQ_")}
    env.update(PGQ_DATABASE_URL=db_url, PGQ_SCHEMA="pgq", PGQ_POLL_INTERVAL_SECONDS="0.2",
               PYTHONPATH=os.pathsep.join([str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]))
    if settings.redis_url is not None:
        env.update(PGQ_REDIS_URL=settings.redis_url, PGQ_REDIS_PREFIX=settings.redis_prefix)
    proc = subprocess.Popen([sys.executable, "-m", "pgq.cli", "worker", "evac_app:q"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        row = eventually(lambda: conn.execute("SELECT id FROM pgq.workers WHERE pid = %s AND status = 'active'",
                                              (proc.pid,)).fetchone(), "the worker to register", timeout=60)
        monkeypatch.setenv("PGQ_DATABASE_URL", db_url)
        monkeypatch.delenv("PGQ_SCHEMA", raising=False)
        blank = CliRunner().invoke(main, ["workers", "evacuate", str(row[0]), "--reason", " "])
        result = CliRunner().invoke(main, ["workers", "evacuate", str(row[0])[:8], "--reason", "disk failing"])
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
    assert blank.exit_code == 2 and "reason" in blank.output, blank.output
    assert result.exit_code == 0 and result.output.strip() == f"worker {row[0]}: evacuated", result.output
    assert proc.returncode == EXIT_EVACUATED, output
    assert "evacuated (disk failing)" in output
    assert conn.execute("SELECT status::text, evacuation_reason FROM pgq.workers WHERE id = %s",
                        (row[0],)).fetchone() == ("stopped", "disk failing")
