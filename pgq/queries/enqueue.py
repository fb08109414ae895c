"""The producers' statements: insert jobs, and find out what a broken enqueue did.

``EnqueueQueries.enqueue_jobs`` picks one of three paths (a stored function
for unique keys, one INSERT, COPY for batches), all leaving the same rows.
The rest answers ``pgq.delivery`` after a broken connection: did the
transaction commit, does a finished job carry the key, end the orphaned
session. Retrying is ``delivery``'s decision, not this module's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from pgq.db import execute, quote_ident
from pgq.queries.graph import GraphQueries
from pgq.job import JobSpec
from pgq.queries.base import QueriesBase


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


def _backoff_columns(spec: JobSpec) -> tuple[float | None, float | None, float | None, float | None]:
    b = spec.backoff
    return (None, None, None, None) if b is None else (b.base, b.factor, b.max, b.jitter)


_COPY_BLOCK = 1000  # rows per write in the COPY path


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
    groups = any(s.group_key is not None for s in specs)
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
        if groups:
            line += "\t\\N" if spec.group_key is None else "\t" + _copy_text(spec.group_key)
        lines.append(line + "\n")
    return _copy_columns(timed, timeouts, retries, groups), lines


def _copy_text(value: str) -> str:
    """``value`` as a field of COPY's text format (backslash, tab and line breaks escaped)."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _copy_columns(timed: bool, timeouts: bool, retries: bool, groups: bool) -> str:
    """The column list of a COPY into jobs (constant names only)."""
    columns = "id, task, payload, queue, priority, max_attempts"
    if timed:
        columns += ", run_at"
    if timeouts:
        columns += ", timeout"
    if retries:
        columns += ", retry_base_seconds, retry_factor, retry_max_seconds, retry_jitter"
    if groups:
        columns += ", group_key"
    return columns


class EnqueueQueries(QueriesBase):
    """The producers' statements for one pgq schema."""

    def __init__(self, schema: str) -> None:
        super().__init__(schema)
        s = quote_ident(schema)
        self.graph = GraphQueries(schema)  # jobs with parents (revision 0009)
        # COPY statements by the column list _copy_lines chooses (constant names only).
        self._copy_jobs = {
            columns: f"COPY {s}.jobs ({columns}) FROM STDIN"
            for columns in {_copy_columns(*flags) for flags in itertools.product((False, True), repeat=4)}
        }
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
            " retry_base_seconds, retry_factor, retry_max_seconds, retry_jitter, group_key)"
            " VALUES (%s::text, %s::text::jsonb, %s::text, %s::smallint,"
            " coalesce(%s::timestamptz, now() + make_interval(secs => coalesce(%s::float8, 0))),"
            " %s::int, make_interval(secs => %s::float8), %s::float8, %s::float8, %s::float8, %s::float8,"
            " %s::text)"
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

    def enqueue_jobs(
        self, conn: Any, specs: Sequence[JobSpec], attempt: EnqueueAttempt | None = None,
        with_parents: bool | None = None,
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
        the call got (see ``EnqueueAttempt``). ``with_parents``: whether some spec
        has ``depends_on``, when the caller knows (None: look).
        """
        attempt = attempt or EnqueueAttempt()
        if any(s.depends_on for s in specs) if with_parents is None else with_parents:
            attempt.commit_sent = True  # job graphs: enqueue_jobs_v2 (pgq/queries/graph.py)
            return self.graph.enqueue_with_parents(conn, specs)
        if any(s.unique_key is not None for s in specs):
            attempt.commit_sent = True
            return self._enqueue_by_function(conn, specs)
        if len(specs) == 1:
            attempt.commit_sent = True
            return [self._insert(conn, specs[0])]
        if isinstance(conn, psycopg.Connection):
            return self._enqueue_by_copy(conn, specs, attempt)
        attempt.commit_sent = True
        if any(s.group_key is not None for s in specs):
            # enqueue_jobs() takes no group: one INSERT each, in the caller's transaction.
            return [self._insert(conn, spec) for spec in specs]
        return self._enqueue_by_function(conn, specs)

    def _insert(self, conn: Any, spec: JobSpec) -> tuple[int, bool]:
        """One job without a unique key or parents: one INSERT (five parameters in the common case)."""
        if (spec.run_at is None and not spec.delay_seconds and spec.timeout_seconds is None
                and spec.backoff is None and spec.group_key is None):
            rows = execute(conn, self._insert_plain,
                           [spec.task, spec.payload_json, spec.queue, spec.priority, spec.max_attempts])
        else:
            rows = execute(conn, self._insert_one, [
                spec.task, spec.payload_json, spec.queue, spec.priority, spec.run_at, spec.delay_seconds,
                spec.max_attempts, spec.timeout_seconds, *_backoff_columns(spec), spec.group_key,
            ])
        return int(rows[0][0]), True

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
