"""Issue 9, defect 8: a killed worker's prefetched jobs that never started must not lose an attempt.

A real ``pgq worker`` process (``_worker_proc.py``) runs 2 jobs whose handlers
block, with 8 more claimed and buffered behind them, and is killed with
SIGKILL (no shutdown, no deregistration). Its claims gave the jobs positions
and its heartbeats reported the watermark: every job up to the position of the
two that started. When maintenance rescues the dead worker's jobs, the two
that started pay their attempt (a ``lost`` execution), the eight that never
started are given back untouched: queued, attempts 0, no execution row, one
free rescue each. Before the fix every one of the ten was charged, and with
the default 3 attempts a job could reach the dead letter queue without ever
running. Both modes: in Redis mode the jobs are claimed from popped ids
(``claim_jobs_v2``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgq
from factories import eventually
from pgq.queries import Queries

pytestmark = [pytest.mark.integration, pytest.mark.both_modes, pytest.mark.slow]

WORKER_PROCESS = Path(__file__).with_name("_worker_proc.py")
RUNNING, BUFFERED = 2, 8


def test_issue_8_a_killed_workers_unstarted_jobs_get_their_attempts_back(
    settings: pgq.Settings, db_url: str, conn: psycopg.Connection[Any],
) -> None:
    conn.execute("CREATE TABLE public.handler_starts (job_id bigint PRIMARY KEY)")
    with pgq.connect(settings=settings, strict_tasks=False) as producer:
        ids = producer.enqueue_many([{"task": "blocker", "max_attempts": 3}] * (RUNNING + BUFFERED))

    command = [sys.executable, str(WORKER_PROCESS), db_url, "--buffer", str(BUFFERED), "--record"]
    if settings.redis_url is not None:
        command += ["--redis", settings.redis_url, settings.redis_prefix]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Every job claimed, two handlers started, and the worker has reported it: its
        # watermark covers the started jobs' claim positions.
        def reported() -> bool:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE j.status = 'running'),"
                "       (SELECT count(*) FROM public.handler_starts),"
                "       bool_and(j.claim_position <= w.started_through) FILTER (WHERE s.job_id IS NOT NULL)"
                " FROM pgq.jobs j JOIN pgq.workers w ON w.id = j.worker_id"
                " LEFT JOIN public.handler_starts s ON s.job_id = j.id WHERE j.id = ANY(%s)", (ids,)).fetchone()
            return row == (RUNNING + BUFFERED, RUNNING, True)

        eventually(reported, "the worker to claim every job, start two and report it", timeout=30)
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown, no deregistration
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err
    worker_id = uuid.UUID(out.split()[0])
    if settings.redis_url is not None:
        assert "claimed via redis" in out  # the Redis path's claim (claim_jobs_v2)

    started = {r[0] for r in conn.execute("SELECT job_id FROM public.handler_starts").fetchall()}
    unstarted = set(ids) - started
    assert len(started) == RUNNING and len(unstarted) == BUFFERED
    # The two started first: they were claimed first (lowest positions), and handlers start in order.
    positions = dict(conn.execute("SELECT id, claim_position FROM pgq.jobs WHERE id = ANY(%s)", (ids,)).fetchall())
    assert max(positions[i] for i in started) < min(positions[i] for i in unstarted)

    # The worker is dead; age its last heartbeat instead of waiting stale_after_seconds.
    conn.execute("UPDATE pgq.workers SET last_heartbeat = now() - interval '10 minutes' WHERE id = %s", (worker_id,))
    rescued = Queries("pgq").mark_stale_workers(conn, 60)
    assert sorted(r.job_id for r in rescued if r.job_id is not None) == sorted(ids)

    rows = {r[0]: r[1:] for r in conn.execute(
        "SELECT j.id, j.status::text, j.attempts, j.free_rescues, j.worker_id,"
        "       (SELECT array_agg(e.outcome::text ORDER BY e.attempt) FROM pgq.job_executions e WHERE e.job_id = j.id)"
        " FROM pgq.jobs j WHERE j.id = ANY(%s)", (ids,)).fetchall()}
    # Started: the attempt counts (retried at once), with its execution closed as lost.
    assert {i: rows[i] for i in started} == {i: ("retrying", 1, 0, worker_id, ["lost"]) for i in started}
    # Never started: back in the queue as if never claimed, and nothing recorded as run.
    assert {i: rows[i] for i in unstarted} == {i: ("queued", 0, 1, None, None) for i in unstarted}
