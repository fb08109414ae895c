"""Every statement pgq sends at runtime, as one small typed function each.

Statements are built once per schema (``Queries(schema)``), with the schema
quoted by psycopg, and take only bound parameters. Each function takes a
connection (psycopg, or a caller's SQLAlchemy connection where transactional
use makes sense), runs one statement and returns plain values; deciding what
to do with them is the caller's business.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg

from pgq.db import execute, quote_ident
from pgq.errors import SchemaNotReady
from pgq.job import JOB_COLUMNS, Job, JobSpec, job_from_row
from pgq.sqlfiles import head_revision

# The payload comes as text and is parsed by ``job_from_row``: psycopg's jsonb
# loader decodes bytes per row and cost a claim of 100 jobs ~0.25 ms more.
_JOB_SELECT = ", ".join("payload::text" if c == "payload" else c for c in JOB_COLUMNS)


@dataclass(frozen=True)
class DeadLetter:
    """An open entry of the dead letter queue."""

    job_id: int
    queue: str
    task: str
    reason: str
    last_error: str | None
    attempts: int
    moved_at: dt.datetime
    error_history: list[dict[str, Any]]


@dataclass
class EnqueueAttempt:
    """How far one enqueue got, for deciding what a broken connection means.

    ``commit_sent`` is set just before the message that commits is sent (for
    an autocommit statement, the statement itself); ``transaction_id`` and
    ``job_ids`` once the COPY path has drawn them, before its COMMIT.
    """

    commit_sent: bool = False
    transaction_id: str | None = None
    job_ids: list[int] | None = None


@dataclass(frozen=True)
class Rescue:
    """One row of mark_stale_workers / fail_timed_out_jobs."""

    worker_id: UUID | None
    job_id: int | None
    status: str | None


@dataclass(frozen=True)
class Heartbeat:
    """The answer to a heartbeat.

    ``previous_status``: the worker's status before it ('stale': its jobs were
    rescued meanwhile). ``lost_job_ids``: of the jobs it listed, those it no
    longer owns (cancelled, rescued, timed out): stop them. From
    ``heartbeat_worker_v2`` only: ``status``, its status now ('active' or
    'draining': claim no more, finish or release, deregister), and
    ``rescued_job_ids``, owned jobs it did not list, rescued now as ClaimLost.
    """

    previous_status: str
    lost_job_ids: list[int]
    status: str | None = None
    rescued_job_ids: list[int] = field(default_factory=list)


def _backoff_columns(spec: JobSpec) -> tuple[float | None, float | None, float | None, float | None]:
    b = spec.backoff
    return (None, None, None, None) if b is None else (b.base, b.factor, b.max, b.jitter)


_COPY_BLOCK = 1000  # rows per write in the COPY path

# The most jobs one purge_dead_jobs() call deletes (db/functions/purge_dead_jobs/002.sql).
PURGE_BATCH = 10_000


def _copy_lines(specs: Sequence[JobSpec], ids: Sequence[int], now: dt.datetime) -> tuple[str, list[str]]:
    """The column list and the COPY text lines for ``specs`` with ``ids``.

    Formatted here rather than by ``Copy.write_row`` (twice as fast for a
    batch): columns every job leaves at its default (no delay, timeout or
    retry policy) are left out, so the table's defaults apply exactly as for
    an INSERT (``run_at`` defaults to ``now()``, the same transaction time).
    Task and queue names are validated identifiers; the payload is JSON from
    ``json.dumps``, which escapes every control character, so only its
    backslashes need doubling for the text format.
    """
    timed = any(s.run_at is not None or s.delay_seconds for s in specs)
    timeouts = any(s.timeout_seconds is not None for s in specs)
    retries = any(s.backoff is not None for s in specs)
    lines = []
    for job_id, spec in zip(ids, specs, strict=True):
        payload = spec.payload_json
        if "\\" in payload:
            payload = payload.replace("\\", "\\\\")
        line = f"{job_id}\t{spec.task}\t{payload}\t{spec.queue}\t{spec.priority}\t{spec.max_attempts}"
        if timed:
            run_at = spec.run_at
            if run_at is None:
                run_at = now if not spec.delay_seconds else now + dt.timedelta(seconds=spec.delay_seconds)
            line += "\t" + run_at.isoformat()
        if timeouts:
            line += "\t\\N" if spec.timeout_seconds is None else f"\t{spec.timeout_seconds:.6f} seconds"
        if retries:
            b = spec.backoff
            line += "\t\\N\t\\N\t\\N\t\\N" if b is None else f"\t{b.base!r}\t{b.factor!r}\t{b.max!r}\t{b.jitter!r}"
        lines.append(line + "\n")
    return _copy_columns(timed, timeouts, retries), lines


def _copy_columns(timed: bool, timeouts: bool, retries: bool) -> str:
    """The column list of a COPY into jobs (constant names only)."""
    columns = "id, task, payload, queue, priority, max_attempts"
    if timed:
        columns += ", run_at"
    if timeouts:
        columns += ", timeout"
    if retries:
        columns += ", retry_base_seconds, retry_factor, retry_max_seconds, retry_jitter"
    return columns


class Queries:
    """The statements for one pgq schema."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        s = quote_ident(schema)
        # COPY statements by the column list _copy_lines chooses (constant names only).
        self._copy_jobs = {
            columns: f"COPY {s}.jobs ({columns}) FROM STDIN"
            for columns in {_copy_columns(*flags) for flags in itertools.product((False, True), repeat=3)}
        }
        self.channel_job_available = f"{schema}_job_available"
        self.channel_job_cancelled = f"{schema}_job_cancelled"
        # drain_worker() notifies here, payload: the worker id.
        self.channel_worker_draining = f"{schema}_worker_draining"
        self._enqueue = (
            f"SELECT ord, job_id, created FROM {s}.enqueue_jobs("
            "%s::text[], %s::text[]::jsonb[], %s::text[], %s::int[], %s::timestamptz[], %s::int[],"
            " %s::float8[], %s::text[], %s::float8[], %s::float8[], %s::float8[], %s::float8[])"
        )
        # Delays are turned into run_at by the database clock (now() + delay).
        self._enqueue_delayed = (
            f"SELECT ord, job_id, created FROM {s}.enqueue_jobs("
            "%s::text[], %s::text[]::jsonb[], %s::text[], %s::int[],"
            " ARRAY(SELECT coalesce(r, now() + make_interval(secs => coalesce(d, 0)))"
            "       FROM unnest(%s::timestamptz[], %s::float8[]) AS t(r, d)),"
            " %s::int[], %s::float8[], %s::text[], %s::float8[], %s::float8[], %s::float8[], %s::float8[])"
        )
        # The fast paths for jobs without a unique key (see enqueue_jobs): one
        # INSERT of the common case (every optional column left to its default,
        # five parameters to send) and one that sets them all.
        self._insert_plain = (
            f"INSERT INTO {s}.jobs (task, payload, queue, priority, max_attempts)"
            " VALUES (%s::text, %s::text::jsonb, %s::text, %s::smallint, %s::int) RETURNING id"
        )
        self._insert_one = (
            f"INSERT INTO {s}.jobs (task, payload, queue, priority, run_at, max_attempts, timeout,"
            " retry_base_seconds, retry_factor, retry_max_seconds, retry_jitter)"
            " VALUES (%s::text, %s::text::jsonb, %s::text, %s::smallint,"
            " coalesce(%s::timestamptz, now() + make_interval(secs => coalesce(%s::float8, 0))),"
            " %s::int, make_interval(secs => %s::float8), %s::float8, %s::float8, %s::float8, %s::float8)"
            " RETURNING id"
        )
        # The transaction id too: if the connection breaks during the COMMIT,
        # pg_xact_status() on another connection says whether it committed.
        self._reserve_ids = (
            f"SELECT now(), array_agg(nextval('{s}.jobs_id_seq'::regclass)), pg_current_xact_id()::text"
            " FROM generate_series(1, %s::int)"
        )
        self._xact_status = "SELECT pg_xact_status(%s::xid8)"
        # Unique keys that some job no longer live carries: after a broken unique-key
        # enqueue such a key means "it may have committed and finished already".
        # The failure path only: it may scan (finished jobs have no unique_key index).
        self._finished_keys = (
            f"SELECT DISTINCT unique_key FROM {s}.jobs WHERE unique_key = ANY(%s::text[])"
            " AND status NOT IN ('waiting', 'queued', 'running', 'retrying')"
        )
        # Ends the session still holding a transaction whose client connection broke
        # (the server may take long to notice a vanished client): it then commits or
        # aborts for good. Only the backend running exactly that transaction is signalled.
        self._end_orphan = (
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_xid = %s::xid8::xid"
        )
        self._claim = f"SELECT {_JOB_SELECT} FROM {s}.get_runnable_jobs(%s::text[], %s::uuid, %s::int)"
        self._claim_v2 = (
            f"SELECT {_JOB_SELECT} FROM {s}.get_runnable_jobs_v2(%s::text[], %s::uuid, %s::int, %s::bigint, %s::bigint)"
        )
        self._complete = f"SELECT * FROM {s}.complete_jobs(%s::uuid, %s::bigint[], %s::int[], %s::text[]::jsonb[])"
        self._fail = (
            f"SELECT {s}.fail_job(%s::bigint, %s::uuid, %s::int, %s::text, %s::text, %s::text,"
            f" %s::float8, %s::boolean, %s::{s}.attempt_outcome)"
        )
        self._release = f"SELECT * FROM {s}.release_jobs(%s::uuid, %s::bigint[], %s::int[])"
        self._cancel = f"SELECT {s}.cancel_job(%s::bigint)"
        self._requeue = f"SELECT * FROM {s}.requeue_dead_jobs(%s::bigint[], %s::text)"
        self._purge = f"SELECT * FROM {s}.purge_dead_jobs(%s::bigint[], make_interval(secs => %s::float8))"
        self._stale = f"SELECT worker_id, job_id, job_status FROM {s}.mark_stale_workers(make_interval(secs => %s::float8))"
        self._timed_out = f"SELECT worker_id, job_id, job_status FROM {s}.fail_timed_out_jobs(make_interval(secs => %s::float8))"
        self._prune = f"SELECT {s}.prune_jobs(make_interval(secs => %s::float8), %s::int)"
        # One batch of pruning, by the maintenance leader only: the lock is taken
        # again for this transaction (NULL when another worker leads meanwhile).
        self._prune_if_leader = (
            f"SELECT CASE WHEN pg_try_advisory_xact_lock(hashtext(%s))"
            f" THEN {s}.prune_jobs(make_interval(secs => %s::float8), %s::int) END"
        )
        self._prune_workers = f"SELECT {s}.prune_workers(make_interval(secs => %s::float8), %s::int)"
        self._register = f"SELECT {s}.register_worker(%s::uuid, %s::text, %s::int, %s::text[], %s::int, %s::jsonb)"
        self._heartbeat = (
            f"SELECT previous_status, lost_job_ids FROM {s}.heartbeat_worker(%s::uuid, %s::int, %s::bigint[], %s::real)"
        )
        self._heartbeat_v2 = (
            f"SELECT status, previous_status, lost_job_ids, rescued_job_ids"
            f" FROM {s}.heartbeat_worker_v2(%s::uuid, %s::int, %s::bigint[], %s::bigint, %s::real)"
        )
        self._deregister = f"SELECT {s}.deregister_worker(%s::uuid)"
        self._drain = f"SELECT {s}.drain_worker(%s::uuid)"
        self._stuck = f"SELECT {s}.set_worker_stuck_handlers(%s::uuid, %s::int)"
        self._get = f"SELECT {_JOB_SELECT} FROM {s}.jobs WHERE id = %s::bigint"
        self._status = f"SELECT status, result, last_error FROM {s}.jobs WHERE id = %s::bigint"
        self._dead_letters = (
            f"SELECT d.job_id, d.queue, d.task, d.reason, d.last_error, j.attempts, d.moved_at, d.error_history"
            f" FROM {s}.dead_letter_queue AS d JOIN {s}.jobs AS j ON j.id = d.job_id"
            " WHERE d.requeued_at IS NULL AND (%s::text IS NULL OR d.queue = %s::text)"
            " ORDER BY d.moved_at, d.id LIMIT %s::int"
        )
        self._dlq_size = f"SELECT count(*) FROM {s}.dead_letter_queue WHERE requeued_at IS NULL"
        self._queue_stats = (
            f"SELECT queue, status::text, priority, jobs, due, extract(epoch FROM oldest_due_age)"
            f" FROM {s}.queue_stats ORDER BY queue, status, priority DESC"
        )
        self._status_estimates = f"SELECT status::text, jobs FROM {s}.job_status_estimates"
        self._workers = (
            f"SELECT id, hostname, pid, status::text, queues, capacity, current_load, running_jobs,"
            f" health_score, extract(epoch FROM heartbeat_age), started_at, stuck_handlers"
            f" FROM {s}.worker_status ORDER BY status, started_at"
        )
        # Seconds until the next scheduled (delayed or retrying) job of these
        # queues is due: one index probe per queue and priority on the claim index.
        self._next_due = (
            f"SELECT extract(epoch FROM min(n.run_at) - now())"
            f" FROM unnest(%s::text[]) AS q(queue), generate_series(1, 5) AS p(priority),"
            f" LATERAL (SELECT run_at FROM {s}.jobs AS j"
            "           WHERE j.queue = q.queue AND j.priority = p.priority"
            "             AND j.status IN ('queued', 'retrying') AND j.run_at > now()"
            "           ORDER BY j.run_at LIMIT 1) AS n"
        )
        # Seconds until the earliest queued or retrying job of these queues is due
        # (<= 0: one is due now): what a burst run waits for. Same probes as above.
        self._due = (
            f"SELECT extract(epoch FROM min(n.run_at) - now())"
            f" FROM unnest(%s::text[]) AS q(queue), generate_series(1, 5) AS p(priority),"
            f" LATERAL (SELECT run_at FROM {s}.jobs AS j"
            "           WHERE j.queue = q.queue AND j.priority = p.priority"
            "             AND j.status IN ('queued', 'retrying')"
            "           ORDER BY j.run_at LIMIT 1) AS n"
        )
        self._revision = f"SELECT version_num FROM {s}.alembic_version"
        self._revision_exists = "SELECT to_regclass(%s) IS NOT NULL"
        # One leader per database and schema for maintenance (SPEC §12: only
        # per-database advisory locks, no global singleton).
        self._leader = "SELECT pg_try_advisory_xact_lock(hashtext(%s))"
        # SET LOCAL, with a bound parameter: the server ends this session if it idles
        # inside the current transaction for longer than this many milliseconds.
        self._idle_limit = "SELECT set_config('idle_in_transaction_session_timeout', %s, true)"

    # ------------------------------------------------------------ producers
    def enqueue_jobs(
        self, conn: Any, specs: Sequence[JobSpec], attempt: EnqueueAttempt | None = None
    ) -> list[tuple[int, bool]]:
        """Insert ``specs``; return ``(job_id, created)`` in input order.

        Three paths, chosen for speed, all leaving the same rows (the column
        defaults and CHECK constraints of ``jobs`` are the rules, and the insert
        trigger sends the NOTIFY):

        - jobs with a unique key go through ``enqueue_jobs()`` in the database,
          which resolves a key held by a live job to that job's id;
        - one job without a key is a single ``INSERT ... RETURNING id``;
        - many jobs without keys on a psycopg connection are written with COPY
          (ids drawn from the sequence first, so they come back in input order).

        Every path is one transaction; a delay is added to the database's
        transaction time, never to the client clock. ``attempt`` records how far
        the call got (see ``EnqueueAttempt``).
        """
        attempt = attempt or EnqueueAttempt()
        if any(s.unique_key is not None for s in specs):
            attempt.commit_sent = True
            return self._enqueue_by_function(conn, specs)
        if len(specs) == 1:
            spec = specs[0]
            attempt.commit_sent = True
            if (spec.run_at is None and not spec.delay_seconds and spec.timeout_seconds is None
                    and spec.backoff is None):
                rows = execute(conn, self._insert_plain,
                               [spec.task, spec.payload_json, spec.queue, spec.priority, spec.max_attempts])
                return [(int(rows[0][0]), True)]
            rows = execute(conn, self._insert_one, [
                spec.task, spec.payload_json, spec.queue, spec.priority, spec.run_at, spec.delay_seconds,
                spec.max_attempts, spec.timeout_seconds, *_backoff_columns(spec),
            ])
            return [(int(rows[0][0]), True)]
        if isinstance(conn, psycopg.Connection):
            return self._enqueue_by_copy(conn, specs, attempt)
        attempt.commit_sent = True
        return self._enqueue_by_function(conn, specs)

    def _enqueue_by_copy(
        self, conn: psycopg.Connection[Any], specs: Sequence[JobSpec], attempt: EnqueueAttempt
    ) -> list[tuple[int, bool]]:
        # On an autocommit (pooled) connection the batch is its own transaction; on
        # a caller's connection it joins the caller's transaction, which decides.
        with conn.transaction() if conn.autocommit else contextlib.nullcontext():
            ((now, ids, xid),) = execute(conn, self._reserve_ids, [len(specs)])
            attempt.transaction_id, attempt.job_ids = xid, [int(i) for i in ids]
            columns, lines = _copy_lines(specs, ids, now)
            with conn.cursor().copy(self._copy_jobs[columns]) as copy:
                # Blocks of rows: the server parses one while the next is formatted.
                for start in range(0, len(lines), _COPY_BLOCK):
                    copy.write("".join(lines[start:start + _COPY_BLOCK]))
            attempt.commit_sent = True  # leaving the block sends COMMIT
        return [(int(job_id), True) for job_id in ids]

    def transaction_status(self, conn: Any, transaction_id: str) -> str | None:
        """``pg_xact_status``: 'committed', 'aborted', 'in progress' (None: too old to know)."""
        value = execute(conn, self._xact_status, [transaction_id])[0][0]
        return None if value is None else str(value)

    def finished_unique_keys(self, conn: Any, keys: Sequence[str]) -> set[str]:
        """Those of ``keys`` that a job past its live statuses (completed, dead, cancelled) carries."""
        return {str(r[0]) for r in execute(conn, self._finished_keys, [list(keys)])}

    def end_orphaned_transaction(self, conn: Any, transaction_id: str) -> bool:
        """Terminate the session still running ``transaction_id``, if any; True if one was signalled."""
        return any(bool(r[0]) for r in execute(conn, self._end_orphan, [transaction_id]))

    def _enqueue_by_function(self, conn: Any, specs: Sequence[JobSpec]) -> list[tuple[int, bool]]:
        """Insert ``specs`` through the ``enqueue_jobs()`` stored function (one round trip)."""
        base = [
            [s.task for s in specs],
            [s.payload_json for s in specs],
            [s.queue for s in specs],
            [s.priority for s in specs],
        ]
        rest = [
            [s.max_attempts for s in specs],
            [s.timeout_seconds for s in specs],
            [s.unique_key for s in specs],
            [s.backoff.base if s.backoff else None for s in specs],
            [s.backoff.factor if s.backoff else None for s in specs],
            [s.backoff.max if s.backoff else None for s in specs],
            [s.backoff.jitter if s.backoff else None for s in specs],
        ]
        run_at = [s.run_at for s in specs]
        if any(s.delay_seconds for s in specs):
            params = [*base, run_at, [s.delay_seconds for s in specs], *rest]
            rows = execute(conn, self._enqueue_delayed, params)
        else:
            rows = execute(conn, self._enqueue, [*base, run_at, *rest])
        rows.sort(key=lambda r: r[0])
        return [(int(r[1]), bool(r[2])) for r in rows]

    def cancel_job(self, conn: Any, job_id: int) -> bool:
        return bool(execute(conn, self._cancel, [job_id])[0][0])

    def requeue_dead_jobs(self, conn: Any, job_ids: Sequence[int] | None, queue: str | None) -> list[int]:
        ids = None if job_ids is None else list(job_ids)
        return [int(r[0]) for r in execute(conn, self._requeue, [ids, queue])]

    def purge_dead_jobs(self, conn: Any, job_ids: Sequence[int] | None, older_than_seconds: float) -> list[int]:
        """One bounded batch: at most ``PURGE_BATCH`` dead jobs purged (call again while it returns that many)."""
        ids = None if job_ids is None else list(job_ids)
        return [int(r[0]) for r in execute(conn, self._purge, [ids, older_than_seconds])]

    # ------------------------------------------------------------ reads
    def get_job(self, conn: Any, job_id: int) -> Job | None:
        rows = execute(conn, self._get, [job_id])
        return job_from_row(rows[0]) if rows else None

    def job_outcome(self, conn: Any, job_id: int) -> tuple[str, Any, str | None] | None:
        rows = execute(conn, self._status, [job_id])
        return (str(rows[0][0]), rows[0][1], rows[0][2]) if rows else None

    def dead_letters(self, conn: Any, queue: str | None, limit: int) -> list[DeadLetter]:
        rows = execute(conn, self._dead_letters, [queue, queue, limit])
        return [DeadLetter(int(r[0]), r[1], r[2], r[3], r[4], int(r[5]), r[6], list(r[7])) for r in rows]

    def dead_letter_count(self, conn: Any) -> int:
        return int(execute(conn, self._dlq_size)[0][0])

    def queue_stats(self, conn: Any) -> list[tuple[Any, ...]]:
        return execute(conn, self._queue_stats)

    def status_estimates(self, conn: Any) -> dict[str, int]:
        """Estimated jobs per status from the table statistics (``job_status_estimates``)."""
        return {str(r[0]): int(r[1]) for r in execute(conn, self._status_estimates)}

    def workers(self, conn: Any) -> list[tuple[Any, ...]]:
        return execute(conn, self._workers)

    def schema_revision(self, conn: Any) -> str | None:
        """The Alembic revision of the schema, or None when it was never migrated."""
        if not execute(conn, self._revision_exists, [f"{quote_ident(self.schema)}.alembic_version"])[0][0]:
            return None
        rows = execute(conn, self._revision)
        return str(rows[0][0]) if rows else None

    # ------------------------------------------------------------ workers
    def register_worker(
        self, conn: Any, worker_id: UUID, hostname: str, pid: int, queues: Sequence[str], capacity: int,
        metadata_json: str,
    ) -> None:
        execute(conn, self._register, [worker_id, hostname, pid, list(queues), capacity, metadata_json])

    def heartbeat_worker(
        self, conn: Any, worker_id: UUID, load: int, running: Sequence[int], health_score: float | None = None
    ) -> Heartbeat:
        row = execute(conn, self._heartbeat, [worker_id, load, list(running), health_score])[0]
        return Heartbeat(str(row[0]), [int(i) for i in row[1]])

    def heartbeat_worker_v2(
        self, conn: Any, worker_id: UUID, load: int, running: Sequence[int], started_through: int | None,
        health_score: float | None = None,
    ) -> Heartbeat:
        """Send a heartbeat with the worker's watermark (``heartbeat_worker_v2``, commits).

        Args:
            running: every job the worker holds and has not finished reporting
                (prefetched, running, or finished with its outcome not committed
                yet); an owned job claimed more than 10 s ago and not listed is
                rescued as ClaimLost (``rescued_job_ids``).
            started_through: the worker's watermark P: every job it received with
                a claim position <= P has started (or was finished or released).
                Never lowered; None keeps the stored one.

        Returns:
            A ``Heartbeat`` with every field set.

        Raises:
            InvalidTransition: the worker is stopped or unknown.
            ValidationError: ``started_through`` is negative.
        """
        row = execute(conn, self._heartbeat_v2, [worker_id, load, list(running), started_through, health_score])[0]
        return Heartbeat(str(row[1]), [int(i) for i in row[2]], str(row[0]), [int(i) for i in row[3]])

    def set_worker_stuck_handlers(self, conn: Any, worker_id: UUID, stuck: int) -> None:
        """Record how many of the worker's sync handlers run on past their timeout (commits).

        Raises ``InvalidTransition`` for an unknown worker, ``ValidationError`` for a negative count.
        """
        execute(conn, self._stuck, [worker_id, stuck])

    def deregister_worker(self, conn: Any, worker_id: UUID) -> int:
        return int(execute(conn, self._deregister, [worker_id])[0][0])

    def drain_worker(self, conn: Any, worker_id: UUID) -> bool:
        """Ask a worker to drain (``drain_worker``, commits): active -> draining.

        Returns:
            True when this call asked for it, False when it was already draining.

        Raises:
            InvalidTransition: the worker is stopped or unknown.
        """
        return bool(execute(conn, self._drain, [worker_id])[0][0])

    def get_runnable_jobs(self, conn: Any, queues: Sequence[str], worker_id: UUID, max_jobs: int) -> list[Job]:
        """Claim up to ``max_jobs`` jobs; their attempts count from the claim on (commits).

        Raises:
            WorkerDraining: the worker was asked to drain: claim no more.
            InvalidTransition: the worker is stale (register again), stopped or unknown.
        """
        return [job_from_row(r) for r in execute(conn, self._claim, [list(queues), worker_id, max_jobs])]

    def get_runnable_jobs_v2(
        self, conn: Any, queues: Sequence[str], worker_id: UUID, max_jobs: int, position_base: int,
        started_through: int | None,
    ) -> list[Job]:
        """Claim up to ``max_jobs`` jobs with claim positions (``get_runnable_jobs_v2``, commits).

        Job ``i`` of the result (claim order) has claim position
        ``position_base + 1 + i``. A worker passes as ``position_base`` the
        number of jobs it asked for before (the sum of its earlier
        ``max_jobs`` and ``claim_jobs_v2`` id counts), and as ``started_through``
        its watermark: every job it received with a position up to it has
        started (or was finished or released). A rescue after a crash gives
        back the attempts of the jobs above the watermark. With jobs claimed,
        a watermark costs an update of the worker's row instead of a share
        lock; None keeps the stored one (it then lags until the heartbeat).

        Raises:
            WorkerDraining: the worker was asked to drain: claim no more.
            InvalidTransition: the worker is stale (register again), stopped or unknown.
            ValidationError: a negative position or watermark, no queue, ``max_jobs`` < 1.
        """
        params = [list(queues), worker_id, max_jobs, position_base, started_through]
        return [job_from_row(r) for r in execute(conn, self._claim_v2, params)]

    def seconds_until_next_due(self, conn: Any, queues: Sequence[str]) -> float | None:
        """Seconds until the next not-yet-due job of ``queues`` is due (None if there is none)."""
        value = execute(conn, self._next_due, [list(queues)])[0][0]
        return None if value is None else max(0.0, float(value))

    def seconds_until_due(self, conn: Any, queues: Sequence[str]) -> float | None:
        """Seconds until the earliest queued or retrying job of ``queues`` is due: 0 when
        one is due now, None when there is none (delayed jobs and retries included)."""
        value = execute(conn, self._due, [list(queues)])[0][0]
        return None if value is None else max(0.0, float(value))

    def complete_jobs(
        self, conn: Any, worker_id: UUID, job_ids: Sequence[int], attempts: Sequence[int],
        results_json: Sequence[str | None],
    ) -> set[int]:
        # Results are mostly None (handlers that return nothing): then send no array at all.
        results = None if all(r is None for r in results_json) else list(results_json)
        rows = execute(conn, self._complete, [worker_id, list(job_ids), list(attempts), results])
        return {int(r[0]) for r in rows}

    def fail_job(
        self, conn: Any, job_id: int, worker_id: UUID, attempt: int, error_type: str, message: str,
        traceback: str | None, retry_delay: float | None, fatal: bool, outcome: str,
    ) -> bool:
        params = [job_id, worker_id, attempt, error_type, message, traceback, retry_delay, fatal, outcome]
        return bool(execute(conn, self._fail, params)[0][0])

    def release_jobs(self, conn: Any, worker_id: UUID, job_ids: Sequence[int], attempts: Sequence[int]) -> set[int]:
        return {int(r[0]) for r in execute(conn, self._release, [worker_id, list(job_ids), list(attempts)])}

    # ------------------------------------------------------------ maintenance
    def limit_idle_in_transaction(self, conn: Any, seconds: float) -> None:
        """End this session if it idles inside the current transaction for ``seconds`` (SET LOCAL)."""
        execute(conn, self._idle_limit, [str(max(1, round(seconds * 1000)))])

    def try_lead(self, conn: Any) -> bool:
        """Take this schema's maintenance lock for the current transaction, if free."""
        return bool(execute(conn, self._leader, [f"pgq-maintenance:{self.schema}"])[0][0])

    def mark_stale_workers(self, conn: Any, stale_after_seconds: float) -> list[Rescue]:
        return [Rescue(r[0], r[1], r[2]) for r in execute(conn, self._stale, [stale_after_seconds])]

    def fail_timed_out_jobs(self, conn: Any, grace_seconds: float) -> list[Rescue]:
        return [Rescue(r[0], r[1], r[2]) for r in execute(conn, self._timed_out, [grace_seconds])]

    def prune_jobs(self, conn: Any, older_than_seconds: float, limit: int) -> int:
        return int(execute(conn, self._prune, [older_than_seconds, limit])[0][0])

    def prune_jobs_if_leader(self, conn: Any, older_than_seconds: float, limit: int) -> int | None:
        """One batch of ``prune_jobs`` if this transaction gets the maintenance lock, else None."""
        value = execute(conn, self._prune_if_leader,
                        [f"pgq-maintenance:{self.schema}", older_than_seconds, limit])[0][0]
        return None if value is None else int(value)

    def prune_workers(self, conn: Any, older_than_seconds: float, limit: int) -> int:
        return int(execute(conn, self._prune_workers, [older_than_seconds, limit])[0][0])


def ensure_current(conn: Any, schema: str) -> None:
    """Raise ``SchemaNotReady`` unless ``schema`` is at this pgq's head revision."""
    current = Queries(schema).schema_revision(conn)
    needed = head_revision()
    if current != needed:
        raise SchemaNotReady(current, needed, schema)


class MirrorQueries:
    """The statements of the optional Redis accelerator (``pgq.redis``), for one schema.

    Kept apart from ``Queries`` so that Postgres-only deployments never build
    them; both follow the same rules (bound parameters, schema quoted once).
    """

    def __init__(self, schema: str) -> None:
        s = quote_ident(schema)
        self._claim = f"SELECT {_JOB_SELECT} FROM {s}.claim_jobs(%s::bigint[], %s::uuid)"
        self._claim_v2 = f"SELECT {_JOB_SELECT} FROM {s}.claim_jobs_v2(%s::bigint[], %s::uuid, %s::bigint, %s::bigint)"
        self._horizon = f"SELECT {s}.mirror_horizon(), now()"
        self._now = "SELECT now()"
        self._after = (
            f"SELECT id, queue, priority, run_at FROM {s}.runnable_jobs_after("
            "%s::timestamptz, %s::bigint, now(), %s::int)"
        )
        self._runnable = (
            f"SELECT id, queue, priority FROM {s}.jobs"
            " WHERE id = ANY (%s::bigint[]) AND status IN ('queued', 'retrying') AND run_at <= now()"
        )
        self._live_workers = (
            f"SELECT id FROM {s}.workers WHERE id = ANY (%s::uuid[]) AND status IN ('active', 'draining')"
        )
        self._runnable_count = (
            f"SELECT queue, count(*) FROM {s}.jobs"
            " WHERE status IN ('queued', 'retrying') AND run_at <= now() GROUP BY queue"
        )

    def claim_jobs(self, conn: Any, job_ids: Sequence[int], worker_id: UUID) -> list[Job]:
        """Claim these ids for the worker (the ones still runnable); claim order."""
        return [job_from_row(r) for r in execute(conn, self._claim, [list(job_ids), worker_id])]

    def claim_jobs_v2(
        self, conn: Any, job_ids: Sequence[int], worker_id: UUID, position_base: int, started_through: int | None,
    ) -> list[Job]:
        """Claim these ids with claim positions (``claim_jobs_v2``, commits); claim order.

        As ``Queries.get_runnable_jobs_v2``: job ``i`` of the result has position
        ``position_base + 1 + i``, and the worker advances its base by
        ``len(job_ids)``.

        Raises:
            WorkerDraining: the worker was asked to drain: claim no more.
            InvalidTransition: the worker is stale (register again), stopped or unknown.
        """
        params = [list(job_ids), worker_id, position_base, started_through]
        return [job_from_row(r) for r in execute(conn, self._claim_v2, params)]

    def horizon(self, conn: Any) -> tuple[dt.datetime, dt.datetime]:
        """``(mirror_horizon(), now())``: the reconciler's next watermark and the database time."""
        row = execute(conn, self._horizon)[0]
        return row[0], row[1]

    def now(self, conn: Any) -> dt.datetime:
        """The database time (``pgq status``: its caller may not run ``mirror_horizon``)."""
        value: dt.datetime = execute(conn, self._now)[0][0]
        return value

    def runnable_after(
        self, conn: Any, after_run_at: dt.datetime | str, after_id: int, limit: int
    ) -> list[tuple[int, str, int, dt.datetime]]:
        """One page of ``runnable_jobs_after``: due runnable jobs after (run_at, id), in that order."""
        rows = execute(conn, self._after, [after_run_at, after_id, limit])
        return [(int(r[0]), str(r[1]), int(r[2]), r[3]) for r in rows]

    def runnable_entries(self, conn: Any, job_ids: Sequence[int]) -> list[tuple[int, str, int]]:
        """``(id, queue, priority)`` of those ids that are runnable and due now."""
        return [(int(r[0]), str(r[1]), int(r[2])) for r in execute(conn, self._runnable, [list(job_ids)])]

    def live_workers(self, conn: Any, worker_ids: Sequence[UUID]) -> set[UUID]:
        """Those of ``worker_ids`` that Postgres counts as alive (active or draining)."""
        return {r[0] for r in execute(conn, self._live_workers, [list(worker_ids)])}

    def runnable_counts(self, conn: Any) -> dict[str, int]:
        """Runnable, due jobs per queue (for ``pgq status``: this scans the runnable set)."""
        return {str(r[0]): int(r[1]) for r in execute(conn, self._runnable_count)}


class MemoryQueries:
    """The execution memory's reads (``pgq.memory``), for one schema: rows only, read only.

    The memory never changes a job; a cluster's requeue goes through ``requeue_dead_jobs``.
    """

    def __init__(self, schema: str) -> None:
        s = quote_ident(schema)
        # The attempt to search from: the newest failed one, else the newest.
        self._attempt = (
            "SELECT e.job_id, e.attempt, j.queue, j.task, e.outcome::text, extract(epoch FROM e.finished_at)::float8,"
            " coalesce(e.error_type, ''), coalesce(e.error_message, ''), e.traceback, e.duration_ms, e.worker_id::text,"
            f" j.payload FROM {s}.job_executions e JOIN {s}.jobs j ON j.id = e.job_id WHERE e.job_id = %s::bigint"
            " ORDER BY (e.outcome = 'completed'), e.finished_at DESC, e.id DESC LIMIT 1"
        )
        self._fates = (
            "SELECT j.id, j.status::text,"
            f" EXISTS (SELECT 1 FROM {s}.job_executions e WHERE e.job_id = j.id AND e.outcome = 'completed'),"
            f" EXISTS (SELECT 1 FROM {s}.dead_letter_queue d WHERE d.job_id = j.id AND d.requeued_at IS NOT NULL)"
            f" FROM {s}.jobs j WHERE j.id = ANY(%s::bigint[])"
        )
        # The final attempt of each open dead letter (LATERAL: one index probe per job).
        self._dead = (
            "SELECT d.job_id, d.queue, d.task, d.moved_at, coalesce(e.attempt, 0), coalesce(e.outcome::text, 'failed'),"
            " coalesce(e.error_type, ''), coalesce(e.error_message, d.last_error, ''), e.traceback"
            f" FROM {s}.dead_letter_queue d LEFT JOIN LATERAL (SELECT attempt, outcome, error_type, error_message,"
            f" traceback FROM {s}.job_executions x WHERE x.job_id = d.job_id ORDER BY x.id DESC LIMIT 1) e ON true"
            " WHERE d.requeued_at IS NULL AND (%s::text IS NULL OR d.queue = %s::text)"
            " ORDER BY d.moved_at, d.id LIMIT %s::int"
        )

    def attempt(self, conn: Any, job_id: int) -> tuple[Any, ...] | None:
        """``job_id``'s newest failed attempt (else newest): job_id, attempt, queue, task, outcome,
        finished_at (epoch seconds), error_type, message, traceback, duration_ms, worker_id, payload."""
        rows = execute(conn, self._attempt, [job_id])
        return rows[0] if rows else None

    def fates(self, conn: Any, job_ids: Sequence[int]) -> list[tuple[Any, ...]]:
        """(job id, status, any attempt completed, requeued from the DLQ) of those jobs that still exist."""
        return execute(conn, self._fates, [list(job_ids)])

    def dead_jobs(self, conn: Any, queue: str | None, limit: int) -> list[tuple[Any, ...]]:
        """Open dead letters, oldest first: job_id, queue, task, moved_at, and the final attempt's
        attempt, outcome, error_type, message, traceback."""
        return execute(conn, self._dead, [queue, queue, limit])
