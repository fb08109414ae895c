"""The application the chaos suite's worker processes run: ``pgq worker chaos_app:queue``.

Not a test module. Settings come from the ``PGQ_*`` variables the test sets.
The one task, ``chaos.work``, records every execution in ``chaos.runs`` (job,
attempt, worker, pid, start and end from the database clock) on a connection
of its own, so that the audit can compare what really ran with what the
queue recorded. Before that, its first act is to append "job attempt worker claimed_at" to the
process's start journal (``CHAOS_START_LOG``; a ``write`` survives a
``kill -9`` at once, where the INSERT takes a round trip): the audit's
evidence that a handler started. Its payload says how it behaves: ``ok``
(returns), ``flaky`` (raises on its first attempt), ``fail`` (always raises),
and how long it works (``ms``, cut short when the worker tells the handler to
stop).

Fault hooks, from ``CHAOS_*`` variables (probabilities per call, 0 = off):

- ``CHAOS_KILL_CLAIM``: SIGKILL itself right after a claim committed (the jobs
  are running for a worker that no longer exists), on the Postgres path
  (``get_runnable_jobs_v2``) and on the Redis path (``claim_jobs_v2`` of popped ids);
- ``CHAOS_KILL_ACK``: SIGKILL itself just before or just after writing outcomes;
- ``CHAOS_KILL_HANDLER``: SIGKILL itself inside a handler, mid-work;
- ``CHAOS_KILL_ONCE_AFTER=N``: besides those odds, each of the moments above is
  certain to be hit once per run: the first process to reach that moment for the
  N-th time claims it (a file created with ``O_EXCL`` in the run's directory, the
  workers' working directory) and dies there. Luck alone can miss a moment: a
  Redis-mode run makes few enough claims that 1 % odds per claim missed them all;
- ``CHAOS_STALL_LEADER=1``: SIGSTOP itself inside the maintenance leader's
  transaction, right after ``mark_stale_workers`` (once per process).

A degrading worker (issue 11, evacuation), from ``CHAOS_DEGRADE``, once it
has started ``CHAOS_DEGRADE_AFTER_JOBS`` jobs (default 100), so that its
health history is healthy first: ``latency`` (each job works longer, doubling
every ``CHAOS_DEGRADE_DOUBLING_SECONDS``, 0.5 s by default, up to 2 s),
``errors`` (a job fails with a chance rising from 0 to 1 in 2 s) or
``memory`` (each job keeps 1 MiB more, up to 400 MiB; the worker's
``PGQ_HEALTH_RSS_LIMIT_BYTES`` is set, before its settings are read, to its
RSS at start plus ``CHAOS_DEGRADE_RSS_HEADROOM_MB``, 150 MiB by default). The
onset is the start of that job in ``chaos.runs``.

Each execution also records how its job was claimed (``chaos.runs.via``:
``postgres`` or ``redis``), so that a Redis-mode scenario can show that the
workers fell back to Postgres during a Redis fault and came back to Redis.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import psycopg

import pgq
from pgq.job import Job
from pgq.queries import MirrorQueries, Queries, Rescue

TASK = "chaos.work"
QUEUE = "chaos"


def _probability(name: str) -> float:
    return float(os.environ.get(name) or 0.0)


KILL_CLAIM = _probability("CHAOS_KILL_CLAIM")
KILL_ACK = _probability("CHAOS_KILL_ACK")
KILL_HANDLER = _probability("CHAOS_KILL_HANDLER")
STALL_LEADER = os.environ.get("CHAOS_STALL_LEADER") == "1"
_rng = random.Random()
_stalled = threading.Event()
# job id -> how its current claim was made ("postgres" or "redis"), read by the handler.
_via: dict[int, str] = {}


def _die(where: str) -> None:
    """SIGKILL this process now, saying where in its log (the harness counts these lines)."""
    os.write(2, f"chaos: SIGKILL {where}\n".encode())
    os.kill(os.getpid(), signal.SIGKILL)


_ONCE_AFTER = int(os.environ.get("CHAOS_KILL_ONCE_AFTER") or 0)
_reached: dict[str, int] = {}
_reached_lock = threading.Lock()


def _maybe_die(where: str, probability: float) -> None:
    """Die at this moment with ``probability``, or because this process is the first to reach it
    for the ``CHAOS_KILL_ONCE_AFTER``-th time (see the module docstring)."""
    if _ONCE_AFTER:
        with _reached_lock:
            _reached[where] = count = _reached.get(where, 0) + 1
        if count == _ONCE_AFTER:
            try:
                os.close(os.open(f"chaos-once-{where.replace(' ', '-')}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                _die(where)
    if probability and _rng.random() < probability:
        _die(where)


def _claimed(jobs: Sequence[Job], via: str) -> None:
    """After a claim committed: remember the path, and maybe die (``CHAOS_KILL_CLAIM``)."""
    for job in jobs:
        _via[job.id] = via
    if jobs:
        _maybe_die("after a claim", KILL_CLAIM)


_redis_claim = MirrorQueries.claim_jobs_v2


def _claim_popped_ids(self: MirrorQueries, conn: Any, job_ids: Sequence[int], worker_id: UUID, position_base: int,
                      started_through: int | None) -> list[Job]:
    """The Redis path's claim (ids popped from Redis, claimed in Postgres), with the hooks."""
    jobs = _redis_claim(self, conn, job_ids, worker_id, position_base, started_through)
    _claimed(jobs, "redis")
    return jobs


# The worker's Redis side builds its own MirrorQueries: the hook goes on the class.
MirrorQueries.claim_jobs_v2 = _claim_popped_ids  # type: ignore[method-assign]


class ChaosQueries(Queries):
    """pgq's statements, with the fault hooks around the worker's calls."""

    def get_runnable_jobs_v2(self, conn: Any, queues: Sequence[str], worker_id: UUID, max_jobs: int,
                             position_base: int, started_through: int | None) -> list[Job]:
        jobs = super().get_runnable_jobs_v2(conn, queues, worker_id, max_jobs, position_base, started_through)
        _claimed(jobs, "postgres")
        return jobs

    def complete_jobs(self, conn: Any, worker_id: UUID, job_ids: Sequence[int], attempts: Sequence[int],
                      results_json: Sequence[str | None]) -> set[int]:
        _maybe_die("before writing completions", KILL_ACK / 2)
        done = super().complete_jobs(conn, worker_id, job_ids, attempts, results_json)
        _maybe_die("after writing completions", KILL_ACK / 2)
        return done

    def fail_job(self, conn: Any, job_id: int, worker_id: UUID, attempt: int, error_type: str, message: str,
                 traceback: str | None, retry_delay: float | None, fatal: bool, outcome: str) -> bool:
        _maybe_die("before writing a failure", KILL_ACK / 2)
        ok = super().fail_job(conn, job_id, worker_id, attempt, error_type, message, traceback, retry_delay,
                              fatal, outcome)
        _maybe_die("after writing a failure", KILL_ACK / 2)
        return ok

    def mark_stale_workers(self, conn: Any, stale_after_seconds: float) -> list[Rescue]:
        rescued = super().mark_stale_workers(conn, stale_after_seconds)
        if STALL_LEADER and not _stalled.is_set():
            _stalled.set()
            # Stopped while holding the leader's transaction (and its advisory lock) open.
            # Sent to this thread, so that it stops before its next statement (a stop sent
            # to the process may let this thread run on for a moment).
            signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
        return rescued


class Degradation:
    """The fault a degrading worker injects into its own handlers (see the module docstring)."""

    def __init__(self, kind: str, after_jobs: int, doubling: float) -> None:
        self.kind, self.after_jobs, self.doubling = kind, after_jobs, doubling
        self.started = 0
        self.onset: float | None = None  # monotonic time of the first degraded job
        self.kept: list[bytearray] = []
        self.lock = threading.Lock()

    def begin(self) -> float | None:
        """Count a job start; the seconds since the onset (None: not degrading yet)."""
        with self.lock:
            self.started += 1
            if self.started < self.after_jobs:
                return None
            now = time.monotonic()
            if self.onset is None:
                self.onset = now
            return now - self.onset

    def work_ms(self, ms: int, since: float) -> float:
        return min(2000.0, max(ms, 5) * 2 ** (since / self.doubling)) if self.kind == "latency" else ms

    def fails(self, since: float) -> bool:
        return self.kind == "errors" and _rng.random() < min(1.0, since / 2.0)

    def grow(self) -> None:
        if self.kind == "memory" and len(self.kept) < 400:
            with self.lock:
                self.kept.append(bytearray(b"\x01") * (1 << 20))  # written: resident, not just reserved


def _rss_bytes() -> int:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


_DEGRADE = os.environ.get("CHAOS_DEGRADE") or None
degradation = Degradation(_DEGRADE, int(os.environ.get("CHAOS_DEGRADE_AFTER_JOBS") or 100),
                          float(os.environ.get("CHAOS_DEGRADE_DOUBLING_SECONDS") or 0.5)) if _DEGRADE else None
if _DEGRADE == "memory":
    import scipy.stats  # noqa: F401  (what the health analysis loads later: in the RSS at start)

    headroom = int(os.environ.get("CHAOS_DEGRADE_RSS_HEADROOM_MB") or 150) << 20
    os.environ["PGQ_HEALTH_RSS_LIMIT_BYTES"] = str(_rss_bytes() + headroom)

# The start journal: one "job attempt worker claimed_at" line per handler start, appended by one write().
_START_LOG = os.environ.get("CHAOS_START_LOG")
_journal = os.open(_START_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if _START_LOG else None

settings = pgq.Settings.from_env()
queue = pgq.Queue(settings, strict_tasks=False)
queue.queries = ChaosQueries(settings.schema)

_local = threading.local()


def _recorder() -> psycopg.Connection[Any]:
    conn: psycopg.Connection[Any] | None = getattr(_local, "conn", None)
    if conn is None or conn.closed or conn.broken:
        conn = psycopg.connect(settings.require_database_url(), autocommit=True,
                               application_name=os.environ.get("PGAPPNAME", "chaos-worker") + "-rec")
        _local.conn = conn
    return conn


def _record(statement: str, params: Sequence[Any]) -> Any:
    """Run one recording statement; a dropped connection fails the attempt (it is retried)."""
    try:
        row = _recorder().execute(statement, params).fetchone()
    except psycopg.OperationalError:
        _local.conn = None
        raise
    return row[0] if row else None


@queue.task(name=TASK, queue=QUEUE)
def work(n: int, kind: str, ms: int, label: str | None = None) -> dict[str, Any]:
    """The chaos job: record the start, work ``ms`` milliseconds, record the end (``label``: a
    tag the scenario gives jobs it enqueues itself)."""
    ctx = pgq.current_job()
    job = ctx.job
    claimed_at = job.started_at  # the claim this run belongs to (see chaos.runs)
    assert claimed_at is not None
    if _journal is not None:
        os.write(_journal, f"{job.id} {job.attempts} {job.worker_id} {claimed_at.isoformat()}\n".encode())
    run_id = _record(
        "INSERT INTO chaos.runs (job_id, n, attempt, worker_id, pid, claimed_at, via, started_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, clock_timestamp()) RETURNING id",
        (job.id, n, job.attempts, job.worker_id, os.getpid(), claimed_at, _via.pop(job.id, None)))
    _maybe_die("inside a handler", KILL_HANDLER)
    since = degradation.begin() if degradation is not None else None
    if degradation is not None and since is not None:
        degradation.grow()
        ms = int(degradation.work_ms(ms, since))
    # The simulated work; a worker that lost the job (rescued, cancelled) cuts it short.
    ctx.cancelled.wait(ms / 1000.0)
    fails = kind == "fail" or (kind == "flaky" and job.attempts == 1)
    if degradation is not None and since is not None and degradation.fails(since):
        fails = True
    _record("UPDATE chaos.runs SET ended_at = clock_timestamp(), outcome = %s WHERE id = %s RETURNING id",
            ("raised" if fails else "returned", run_id))
    if fails:
        raise RuntimeError(f"chaos job {n} ({kind}) fails on attempt {job.attempts}")
    return {"n": n, "attempt": job.attempts, "worker": str(job.worker_id), "pid": os.getpid()}

