"""Insert jobs and workers directly, in any status, with sensible timestamps.

Tests of the stored functions need rows the public API cannot make in one
step: a job running for a worker whose heartbeat is ten minutes old, a dead
job with a dead letter, a retrying job due in an hour. These helpers write
such rows with plain INSERTs (psycopg, bound parameters) and fill in whatever
the chosen status implies (a running job gets a worker, an attempt and a
start time; a finished one a finish time). Times default to the database's
``now()``; pass explicit datetimes, and the same values as ``p_now`` to the
functions under test, instead of sleeping.

Also here: small readers (``job``, ``executions``, ``snapshot``) that tests
use to assert what changed, and what did not, and ``raises_sqlstate``.
"""

from __future__ import annotations

import contextlib
import threading
import time
import datetime as dt
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

SCHEMA = "pgq"

Conn = psycopg.Connection[Any]


def _q(statement: str, schema: str) -> sql.Composed:
    return sql.SQL(statement).format(s=sql.Identifier(schema))


def insert_worker(
    conn: Conn,
    *,
    worker_id: uuid.UUID | None = None,
    hostname: str = "test-host",
    pid: int = 4242,
    queues: Sequence[str] = ("default",),
    capacity: int = 4,
    current_load: int = 0,
    status: str = "active",
    health_score: float = 1.0,
    last_heartbeat: dt.datetime | None = None,
    started_at: dt.datetime | None = None,
    stopped_at: dt.datetime | None = None,
    metadata: dict[str, Any] | None = None,
    schema: str = SCHEMA,
) -> uuid.UUID:
    """Insert a worker row and return its id.

    ``last_heartbeat`` and ``started_at`` default to now(); a ``stale`` or
    ``stopped`` worker gets ``stopped_at`` = its last heartbeat unless given.
    """
    worker_id = worker_id or uuid.uuid4()
    if status in ("stale", "stopped") and stopped_at is None:
        stopped_at = last_heartbeat  # None: now()
    conn.execute(
        _q(
            "INSERT INTO {s}.workers (id, hostname, pid, queues, capacity, current_load, status,"
            " health_score, last_heartbeat, started_at, stopped_at, metadata)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s::{s}.worker_status_enum, %s,"
            " coalesce(%s::timestamptz, now()), coalesce(%s::timestamptz, %s::timestamptz, now()),"
            " CASE WHEN %s::boolean THEN coalesce(%s::timestamptz, now()) END, %s)",
            schema,
        ),
        (worker_id, hostname, pid, list(queues), capacity, current_load, status, health_score,
         last_heartbeat, started_at, last_heartbeat, status in ("stale", "stopped"), stopped_at,
         Jsonb(metadata or {})),
    )
    return worker_id


def insert_health_sample(conn: Conn, worker_id: uuid.UUID, *, completed: int, failed: int,
                         health_score: float, latency_p50_ms: float | None = None,
                         schema: str = SCHEMA) -> None:
    """Insert one heartbeat health sample of ``worker_id``, logged now()."""
    conn.execute(
        _q(
            "INSERT INTO {s}.worker_health_logs (worker_id, metric_type, metric_value, interval_seconds,"
            " jobs_completed, jobs_failed, error_rate, latency_p50_ms, health_score)"
            " VALUES (%s, 'heartbeat', %s, 1, %s, %s, %s, %s, %s)",
            schema,
        ),
        (worker_id, health_score, completed, failed, failed / max(1, completed + failed), latency_p50_ms,
         health_score),
    )


_JOB_DEFAULT_ATTEMPTS = {
    "waiting": 0, "queued": 0, "running": 1, "retrying": 1, "completed": 1, "dead": None, "cancelled": 0,
}


def insert_job(
    conn: Conn,
    *,
    task: str = "noop",
    queue: str = "default",
    payload: dict[str, Any] | None = None,
    priority: int = 3,
    status: str = "queued",
    run_at: dt.datetime | None = None,
    attempts: int | None = None,
    max_attempts: int = 3,
    timeout: dt.timedelta | None = None,
    unique_key: str | None = None,
    worker_id: uuid.UUID | None = None,
    started_at: dt.datetime | None = None,
    finished_at: dt.datetime | None = None,
    result: Any = None,
    last_error: str | None = None,
    created_at: dt.datetime | None = None,
    updated_at: dt.datetime | None = None,
    retry_base_seconds: float | None = None,
    retry_factor: float | None = None,
    retry_max_seconds: float | None = None,
    retry_jitter: float | None = None,
    schema: str = SCHEMA,
) -> int:
    """Insert one job row in ``status`` and return its id.

    What the status implies is filled in unless given: ``running`` gets a
    registered active worker (created here when ``worker_id`` is None),
    attempt 1 and ``started_at`` = now(); ``retrying`` attempt 1 and a last
    error; ``dead`` attempts = max_attempts; finished statuses a
    ``finished_at``. No dead letter row is written for a dead job (see
    ``insert_dead_letter``). ``created_at``/``updated_at`` default to now().
    """
    if attempts is None:
        attempts = _JOB_DEFAULT_ATTEMPTS[status]
        if attempts is None:
            attempts = max_attempts
    if status == "running" and worker_id is None:
        worker_id = insert_worker(conn, queues=[queue], schema=schema)
    if status == "retrying" and last_error is None:
        last_error = "RuntimeError: boom"
    finished = status in ("completed", "dead", "cancelled")
    has_started = status == "running" or started_at is not None or (worker_id is not None and attempts > 0)
    row = conn.execute(
        _q(
            "INSERT INTO {s}.jobs (task, queue, payload, priority, status, run_at, attempts, max_attempts,"
            " timeout, unique_key, worker_id, started_at, finished_at, result, last_error,"
            " retry_base_seconds, retry_factor, retry_max_seconds, retry_jitter, created_at, updated_at)"
            " VALUES (%s, %s, %s, %s, %s::{s}.job_status, coalesce(%s::timestamptz, now()), %s, %s,"
            " %s::interval, %s::text, %s::uuid,"
            " CASE WHEN %s::boolean THEN coalesce(%s::timestamptz, now()) END,"
            " CASE WHEN %s::boolean THEN coalesce(%s::timestamptz, now()) ELSE %s::timestamptz END,"
            " %s::jsonb, %s::text, %s::float8, %s::float8, %s::float8, %s::float8,"
            " coalesce(%s::timestamptz, now()), coalesce(%s::timestamptz, %s::timestamptz, now()))"
            " RETURNING id",
            schema,
        ),
        (task, queue, Jsonb(payload or {}), priority, status, run_at, attempts, max_attempts,
         timeout, unique_key, worker_id,
         has_started, started_at,
         finished, finished_at, finished_at,
         None if result is None else Jsonb(result), last_error,
         retry_base_seconds, retry_factor, retry_max_seconds, retry_jitter,
         created_at, updated_at, created_at),
    ).fetchone()
    assert row is not None
    return int(row[0])


def insert_jobs(
    conn: Conn,
    count: int,
    *,
    queue: str = "default",
    task: str = "noop",
    priority: int = 3,
    run_at: dt.datetime | None = None,
    schema: str = SCHEMA,
) -> list[int]:
    """Insert ``count`` queued jobs in one statement; return their ids in id order."""
    rows = conn.execute(
        _q(
            "INSERT INTO {s}.jobs (task, queue, priority, run_at, payload)"
            " SELECT %s, %s, %s, coalesce(%s::timestamptz, now()), jsonb_build_object('n', n)"
            " FROM generate_series(1, %s) AS n RETURNING id",
            schema,
        ),
        (task, queue, priority, run_at, count),
    ).fetchall()
    return sorted(int(r[0]) for r in rows)


def insert_execution(
    conn: Conn,
    job_id: int,
    *,
    attempt: int,
    life: int = 1,
    outcome: str = "failed",
    worker_id: uuid.UUID | None = None,
    started_at: dt.datetime | None = None,
    finished_at: dt.datetime | None = None,
    error_type: str | None = "RuntimeError",
    error_message: str | None = "boom",
    schema: str = SCHEMA,
) -> None:
    """Insert a finished attempt into job_executions (history of an earlier attempt)."""
    conn.execute(
        _q(
            "INSERT INTO {s}.job_executions (job_id, life, attempt, worker_id, started_at, finished_at, outcome,"
            " error_type, error_message)"
            " VALUES (%s, %s, %s, %s, coalesce(%s::timestamptz, now()), coalesce(%s::timestamptz, now()),"
            " %s::{s}.attempt_outcome, %s, %s)",
            schema,
        ),
        (job_id, life, attempt, worker_id, started_at, finished_at, outcome, error_type, error_message),
    )


def insert_dead_letter(
    conn: Conn,
    job_id: int,
    *,
    reason: str = "exhausted",
    moved_at: dt.datetime | None = None,
    schema: str = SCHEMA,
) -> None:
    """Insert the open dead letter of a dead job (queue, task and error copied from the job)."""
    conn.execute(
        _q(
            "INSERT INTO {s}.dead_letter_queue (job_id, queue, task, reason, last_error, moved_at)"
            " SELECT id, queue, task, %s, last_error, coalesce(%s::timestamptz, finished_at, now())"
            " FROM {s}.jobs WHERE id = %s",
            schema,
        ),
        (reason, moved_at, job_id),
    )


# ---------------------------------------------------------------- readers


def db_now(conn: Conn) -> dt.datetime:
    """The database clock (``now()`` of a fresh statement on an autocommit connection)."""
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def job(conn: Conn, job_id: int, *, schema: str = SCHEMA) -> dict[str, Any]:
    """The jobs row as a dict (status as text); KeyError-free: asserts the row exists."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_q("SELECT *, status::text AS status FROM {s}.jobs WHERE id = %s", schema), (job_id,))
        row = cur.fetchone()
    assert row is not None, f"job {job_id} does not exist"
    return row


def worker(conn: Conn, worker_id: uuid.UUID, *, schema: str = SCHEMA) -> dict[str, Any]:
    """The workers row as a dict (status as text)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_q("SELECT *, status::text AS status FROM {s}.workers WHERE id = %s", schema), (worker_id,))
        row = cur.fetchone()
    assert row is not None, f"worker {worker_id} does not exist"
    return row


def executions(conn: Conn, job_id: int, *, schema: str = SCHEMA) -> list[dict[str, Any]]:
    """The job's job_executions rows in insertion order (outcome as text)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            _q("SELECT *, outcome::text AS outcome FROM {s}.job_executions WHERE job_id = %s ORDER BY id", schema),
            (job_id,),
        )
        return cur.fetchall()


def dead_letters(conn: Conn, job_id: int, *, schema: str = SCHEMA) -> list[dict[str, Any]]:
    """The job's dead_letter_queue rows, oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_q("SELECT * FROM {s}.dead_letter_queue WHERE job_id = %s ORDER BY id", schema), (job_id,))
        return cur.fetchall()


def statuses(conn: Conn, job_ids: Iterable[int], *, schema: str = SCHEMA) -> dict[int, str]:
    """Map job id -> status text."""
    rows = conn.execute(
        _q("SELECT id, status::text FROM {s}.jobs WHERE id = ANY(%s)", schema), (list(job_ids),)
    ).fetchall()
    return {int(r[0]): str(r[1]) for r in rows}


TABLES = ("jobs", "workers", "job_executions", "dead_letter_queue", "job_dependencies",
          "worker_health_logs", "state_snapshots")


def table_counts(conn: Conn, *, schema: str = SCHEMA) -> dict[str, int]:
    """Row count of every pgq table."""
    counts = {}
    for table in TABLES:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        ).fetchone()
        assert row is not None
        counts[table] = int(row[0])
    return counts


def snapshot(conn: Conn, *, schema: str = SCHEMA) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every pgq table, as text, sorted: compare two snapshots to prove
    that a call changed nothing at all."""
    contents = {}
    for table in TABLES:
        rows = conn.execute(
            sql.SQL("SELECT t::text FROM {}.{} AS t").format(sql.Identifier(schema), sql.Identifier(table))
        ).fetchall()
        contents[table] = sorted(rows)
    return contents


def drain_notifications(listener: Conn, sender: Conn) -> list[tuple[str, str]]:
    """Every notification ``listener`` has received so far, as (channel, payload).

    Instead of waiting for a timeout, ``sender`` sends a sentinel on a private
    channel; Postgres delivers notifications in commit order, so everything
    committed before the sentinel has arrived once the sentinel has.
    """
    sentinel = f"sentinel-{uuid.uuid4()}"
    listener.execute("LISTEN pgq_test_sentinel")
    sender.execute("SELECT pg_notify('pgq_test_sentinel', %s)", (sentinel,))
    received = []
    for note in listener.notifies(timeout=10):
        if note.channel == "pgq_test_sentinel" and note.payload == sentinel:
            return received
        received.append((note.channel, note.payload))
    raise AssertionError("the sentinel notification did not arrive within 10 s")


@contextlib.contextmanager
def raises_sqlstate(sqlstate: str, match: str | None = None) -> Iterator[pytest.ExceptionInfo[psycopg.Error]]:
    """Like ``pytest.raises(psycopg.Error)``, and the error's SQLSTATE must be ``sqlstate``."""
    with pytest.raises(psycopg.Error, match=match) as info:
        yield info
    assert info.value.sqlstate == sqlstate, f"expected SQLSTATE {sqlstate}, got {info.value.sqlstate}: {info.value}"


def eventually(predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Poll ``predicate`` (usually a database read) until it is truthy, or fail after ``timeout``.

    For observing another thread or process; the timeout is a generous upper
    bound for something that takes milliseconds, never a timing assumption.
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        pause.wait(0.02)


class RunningWorker:
    """A worker's ``run()`` in a background thread (the ``running`` fixture makes them)."""

    def __init__(self, worker: Any, wait: float = 20.0) -> None:
        self.worker = worker
        self.wait = wait
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="test-worker", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # reported by join()
            self.error = exc
        finally:
            self.done.set()

    def join(self) -> None:
        """Wait for ``run()`` to return on its own; raise what it raised."""
        self.thread.join(self.wait)
        assert not self.thread.is_alive(), "the worker did not stop"
        if self.error is not None:
            raise self.error

    def stop(self, *, now: bool = False) -> None:
        """``worker.stop()``, then ``join()``."""
        self.worker.stop(now=now)
        self.join()
