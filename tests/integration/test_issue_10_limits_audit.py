"""Issue 10, concurrency limits under real concurrency: three worker processes
(4 runners each) on a queue limited to 3 running jobs, at most 2 per group;
one process is killed with SIGKILL mid-run. Every run is journaled by the
handler (database clock); the audit replays the journal and checks that no
instant had more runs than the limits, in both modes, and that every job
completed (the killed worker's jobs were rescued, their slots freed).

The journal's intervals lie inside the jobs' ``running`` intervals (a handler
starts after its claim commits and ends before its completion is written), so
a breach of the limit in the journal is a breach in the database. A killed
process's unfinished runs end, for the audit, when the test saw it dead.
"""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgq
from factories import eventually

pytestmark = pytest.mark.integration

PROCESS = Path(__file__).with_name("_limited_worker_proc.py")
JOBS, QUEUE_LIMIT, GROUP_LIMIT = 30, 3, 2


@pytest.fixture
def journal(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute("CREATE TABLE public.limit_runs (run bigserial PRIMARY KEY, job_id bigint, attempt int, pid int,"
                 " group_key text, started_at timestamptz, ended_at timestamptz)")
    return conn


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def most_at_once(intervals: list[tuple[dt.datetime, dt.datetime]]) -> int:
    """The largest number of intervals open at one instant (an end before a start at the same time)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


@pytest.mark.parametrize("mode", ["postgres", "redis"])
def test_limits_hold_with_a_worker_killed_mid_run(
    mode: str, db_url: str, journal: psycopg.Connection[Any], processes: list[subprocess.Popen[str]],
    request: pytest.FixtureRequest,
) -> None:
    extra: list[str] = []
    redis: dict[str, Any] = {}
    if mode == "redis":
        url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
        extra, redis = ["--redis", url, prefix], {"redis_url": url, "redis_prefix": prefix}
    q = pgq.connect(settings=pgq.Settings(database_url=db_url, **redis), strict_tasks=False)
    try:
        q.set_queue_policy("limited", max_running=QUEUE_LIMIT, group_max_running=GROUP_LIMIT)
        for _ in range(3):  # all registered before the jobs come, so that the three share them
            proc = subprocess.Popen([sys.executable, str(PROCESS), db_url, *extra], stdout=subprocess.PIPE,
                                    text=True)
            processes.append(proc)
            assert proc.stdout is not None and proc.stdout.readline().strip()
        q.enqueue_many([{"task": "work", "queue": "limited", "payload": {"seconds": 0.3},
                         "group_key": "abc"[n % 3]} for n in range(JOBS)])
    finally:
        q.close()

    # Kill, mid-run, a process that is running a job.
    pids = {p.pid: p for p in processes}
    try:
        victim = eventually(lambda: journal.execute(
            "SELECT pid FROM public.limit_runs WHERE ended_at IS NULL AND pid = ANY (%s)"
            " AND (SELECT count(*) FROM public.limit_runs WHERE ended_at IS NOT NULL) >= 3 LIMIT 1",
            (list(pids),)).fetchone(), "a process running a job after a few jobs ran", timeout=60)[0]
    except AssertionError:
        state = journal.execute("SELECT status, count(*) FROM pgq.jobs GROUP BY 1").fetchall()
        runs = journal.execute("SELECT pid, count(*), count(ended_at) FROM public.limit_runs GROUP BY 1").fetchall()
        raise AssertionError(f"jobs {state}, runs {runs}, pids {list(pids)}, "
                             f"exits {[p.poll() for p in processes]}") from None
    pids[victim].send_signal(signal.SIGKILL)
    pids[victim].wait(10)
    killed_at = journal.execute("SELECT clock_timestamp()").fetchone()[0]

    eventually(lambda: journal.execute("SELECT count(*) = %s FROM pgq.jobs WHERE status = 'completed'",
                                       (JOBS,)).fetchone()[0], "every job completed", timeout=90)
    runs = journal.execute("SELECT job_id, pid, group_key, started_at, ended_at FROM public.limit_runs").fetchall()
    unfinished = [r for r in runs if r[4] is None]
    assert unfinished and {r[1] for r in unfinished} == {victim}  # only the killed process left runs open
    spans = [(r[2], r[3], r[4] or killed_at) for r in runs]
    assert most_at_once([(s, e) for _, s, e in spans]) <= QUEUE_LIMIT
    for group in "abc":
        assert most_at_once([(s, e) for g, s, e in spans if g == group]) <= GROUP_LIMIT
    # The audit can fail: the runs did overlap up to the limit.
    assert most_at_once([(s, e) for _, s, e in spans]) == QUEUE_LIMIT
    assert {r[0] for r in unfinished} <= {r[0] for r in runs if r[4] is not None}  # rescued and run again
