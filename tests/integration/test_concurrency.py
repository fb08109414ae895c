"""Real concurrency: many claimers on separate connections, and a worker
process killed with SIGKILL while it holds a job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgq
from factories import eventually
from pgq.job import JobSpec
from pgq.queries import Queries

pytestmark = pytest.mark.integration

WORKER_PROCESS = Path(__file__).with_name("_worker_proc.py")



def test_concurrent_claimers_get_every_job_exactly_once(db_url: str, conn: psycopg.Connection[Any]) -> None:
    queries = Queries("pgq")
    total, claimers, batch = 3000, 8, 7
    specs = [JobSpec.build("work", {"n": n}, queue="default", max_attempts=1) for n in range(total)]
    ids = [job_id for job_id, _ in queries.enqueue_jobs(conn, specs)]
    assert len(set(ids)) == total

    barrier = threading.Barrier(claimers)
    claimed: dict[uuid.UUID, list[int]] = {}
    errors: list[BaseException] = []

    def claim_loop(k: int) -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as own:
                worker_id = uuid.uuid4()
                queries.register_worker(own, worker_id, f"claimer-{k}", k, ["default"], batch, "{}")
                mine: list[int] = []
                claimed[worker_id] = mine
                barrier.wait(timeout=30)  # all start together
                while True:
                    jobs = queries.get_runnable_jobs(own, ["default"], worker_id, batch)
                    if not jobs:
                        return
                    assert all(j.worker_id == worker_id and j.attempts == 1 for j in jobs)
                    mine.extend(j.id for j in jobs)
                    done = queries.complete_jobs(own, worker_id, [j.id for j in jobs], [1] * len(jobs),
                                                 [None] * len(jobs))
                    assert done == {j.id for j in jobs}
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=claim_loop, args=(k,), name=f"claimer-{k}") for k in range(claimers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    if errors:
        raise errors[0]

    every_claim = [job_id for mine in claimed.values() for job_id in mine]
    assert len(every_claim) == total  # nothing claimed twice...
    assert set(every_claim) == set(ids)  # ...and nothing left behind
    assert sum(1 for mine in claimed.values() if mine) >= 2  # the claimers really ran side by side

    rows = conn.execute("SELECT status::text, attempts, count(*) FROM pgq.jobs GROUP BY 1, 2").fetchall()
    assert rows == [("completed", 1, total)]
    owners = dict(conn.execute("SELECT id, worker_id FROM pgq.jobs").fetchall())
    for worker_id, mine in claimed.items():
        assert all(owners[job_id] == worker_id for job_id in mine)
    row = conn.execute("SELECT count(*), count(DISTINCT job_id), count(*) FILTER (WHERE outcome = 'completed')"
                       " FROM pgq.job_executions").fetchone()
    assert row == (total, total, total)


@pytest.mark.slow  # a process kill (see the marker's description in pyproject.toml)
def test_job_of_a_killed_worker_process_is_rescued_and_completed_exactly_once(
    settings: pgq.Settings, db_url: str, conn: psycopg.Connection[Any],
) -> None:
    short = settings.replace(heartbeat_interval_seconds=1, stale_after_seconds=60, poll_interval_seconds=0.2)
    with pgq.connect(settings=short, strict_tasks=False) as producer:
        job_id = producer.enqueue("blocker", max_attempts=3)

    proc = subprocess.Popen([sys.executable, str(WORKER_PROCESS), db_url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Claimed, and the worker reported that the handler started (its watermark is past
        # the job's claim position): a rescue charges the attempt of a job that ran.
        row = eventually(lambda: conn.execute(
            "SELECT j.worker_id FROM pgq.jobs j JOIN pgq.workers w ON w.id = j.worker_id"
            " WHERE j.id = %s AND j.status = 'running' AND w.started_through >= j.claim_position",
            (job_id,)).fetchone(), "the worker process to claim and start the job")
        killed_worker = row[0]
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown, no deregistration: the process just vanishes
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err
    assert out.split()[0] == str(killed_worker)

    # Postgres does not know yet: the job is still running for a worker that looks alive.
    assert conn.execute("SELECT status::text, attempts FROM pgq.jobs WHERE id = %s",
                        (job_id,)).fetchone() == ("running", 1)
    assert conn.execute("SELECT status::text FROM pgq.workers WHERE id = %s", (killed_worker,)).fetchone() == (
        "active",)

    # Its heartbeats stop; instead of waiting stale_after_seconds, age the last one.
    conn.execute("UPDATE pgq.workers SET last_heartbeat = now() - interval '10 minutes' WHERE id = %s",
                 (killed_worker,))
    runs: list[int] = []
    with pgq.connect(settings=short) as q:
        report = pgq.Maintenance(short, q.pool).run_once()
        assert report.rescued_job_ids == [job_id]
        assert conn.execute("SELECT status::text, attempts FROM pgq.jobs WHERE id = %s",
                            (job_id,)).fetchone() == ("retrying", 1)

        @q.task(name="blocker", max_attempts=3)
        def blocker() -> str:
            runs.append(pgq.current_job().job.attempts)
            return "completed by the new worker"

        new_worker = q.worker(queues=["default"], install_signal_handlers=False, run_maintenance=False)
        new_worker.run(burst=True)
        assert q.wait(job_id, timeout=10) == "completed by the new worker"
        finished = q.get(job_id)

    assert runs == [2]  # run again once, as the second attempt
    assert (finished.status, finished.attempts, finished.worker_id) == (
        pgq.JobStatus.COMPLETED, 2, new_worker.id)
    history = conn.execute("SELECT attempt, outcome::text, worker_id FROM pgq.job_executions WHERE job_id = %s"
                           " ORDER BY id", (job_id,)).fetchall()
    assert history == [(1, "lost", killed_worker), (2, "completed", new_worker.id)]
    assert conn.execute("SELECT status::text FROM pgq.workers WHERE id = %s", (killed_worker,)).fetchone() == (
        "stale",)

    # A late report from the killed worker's attempt (say, a zombie flushing its
    # buffer) is rejected and changes nothing.
    queries = Queries("pgq")
    before = conn.execute("SELECT * FROM pgq.jobs WHERE id = %s", (job_id,)).fetchone()
    assert queries.complete_jobs(conn, killed_worker, [job_id], [1], ['"zombie"']) == set()
    assert queries.fail_job(conn, job_id, killed_worker, 1, "Zombie", "late", None, 0.0, True, "failed") is False
    assert conn.execute("SELECT * FROM pgq.jobs WHERE id = %s", (job_id,)).fetchone() == before
    assert conn.execute("SELECT count(*) FROM pgq.job_executions WHERE job_id = %s", (job_id,)).fetchone() == (2,)
