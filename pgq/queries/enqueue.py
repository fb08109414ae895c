"""The producers' statements: insert jobs, and find out what a broken enqueue did.

``EnqueueQueries.enqueue_jobs`` picks one of three paths (a stored function
for unique keys, one INSERT, COPY for batches), all leaving the same rows.
The rest answers ``pgq.delivery`` after a broken connection: did the
transaction commit, does a finished job carry the key, end the orphaned
session. Retrying is ``delivery``'s decision, not this module's.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pgq.db import quote_ident
from pgq.job import JobSpec
from pgq.operations import CAN_COPY, CopyIn, Op, Statement, Transaction, operation
from pgq.queries.base import QueriesBase
from pgq.queries.graph import GraphQueries


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


def _copy_lines(specs: Sequence[JobSpec], ids: Sequence[int], now: dt.datetime,
                trace_context: str | None = None) -> tuple[str, list[str]]:
    """The column list and the COPY text lines for ``specs`` with ``ids`` (and the
    producer's trace context in every row, when given).

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
    # JSON from json.dumps: only its backslashes need doubling for the text format.
    traced = "" if trace_context is None else "\t" + trace_context.replace("\\", "\\\\")
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
        lines.append(line + traced + "\n")
    return _copy_columns(timed, timeouts, retries, groups, trace_context is not None), lines


def _copy_text(value: str) -> str:
    """``value`` as a field of COPY's text format (backslash, tab and line breaks escaped)."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _copy_columns(timed: bool, timeouts: bool, retries: bool, groups: bool = False, traced: bool = False) -> str:
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
    if traced:
        columns += ", trace_context"
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
            for columns in {_copy_columns(*flags) for flags in itertools.product((False, True), repeat=5)}
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
        insert_one = (
            f"INSERT INTO {s}.jobs (task, payload, queue, priority, run_at, max_attempts, timeout,"
            " retry_base_seconds, retry_factor, retry_max_seconds, retry_jitter, group_key{traced})"
            " VALUES (%s::text, %s::text::jsonb, %s::text, %s::smallint,"
            " coalesce(%s::timestamptz, now() + make_interval(secs => coalesce(%s::float8, 0))),"
            " %s::int, make_interval(secs => %s::float8), %s::float8, %s::float8, %s::float8, %s::float8,"
            " %s::text{value})"
            " RETURNING id"
        )
        self._insert_one = insert_one.format(traced="", value="")
        # Tracing on (pgq.tracing): the same with the producer's trace context.
        self._insert_traced = insert_one.format(traced=", trace_context", value=", %s::jsonb")
        # ... and for the paths through a stored function, in the same transaction.
        self._attach_trace = f"SELECT {s}.attach_trace_context(%s::bigint[], %s::jsonb)"
        # ... and the jobs' groups (enqueue_jobs / enqueue_jobs_v2 take none).
        self._attach_groups = f"SELECT {s}.attach_group_keys(%s::bigint[], %s::text[])"
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

    @operation
    def enqueue_jobs(
        self, specs: Sequence[JobSpec], attempt: EnqueueAttempt | None = None,
        with_parents: bool | None = None, trace_context: str | None = None,
    ) -> Op[list[tuple[int, bool]]]:
        """Insert ``specs``; return ``(job_id, created)`` in input order.

        Three paths, chosen for speed, all leaving the same rows (the column
        defaults and CHECK constraints of ``jobs`` are the rules, and the insert
        trigger sends the NOTIFY):

        - jobs with a unique key go through ``enqueue_jobs()`` in the database,
          which resolves a key held by a live job to that job's id;
        - one job without a key is a single ``INSERT ... RETURNING id``;
        - many jobs without keys on a psycopg connection (sync or async) are
          written with COPY (ids drawn from the sequence first, so they come
          back in input order).

        Every path is one transaction; a delay is added to the database's
        transaction time, never to the client clock. ``attempt`` records how far
        the call got (see ``EnqueueAttempt``). ``with_parents``: whether some spec
        has ``depends_on``, when the caller knows (None: look). ``trace_context``:
        the producer's trace context (JSON, ``pgq.tracing``) stored in every job
        created, in the same transaction; None (tracing off) leaves the column
        out of every statement.
        """
        attempt = attempt or EnqueueAttempt()
        if any(s.depends_on for s in specs) if with_parents is None else with_parents:
            attempt.commit_sent = True  # job graphs: enqueue_jobs_v2 (pgq/queries/graph.py)
            return (yield from self._through_function(specs, self.graph.enqueue_with_parents.op(specs), trace_context))
        if any(s.unique_key is not None for s in specs):
            attempt.commit_sent = True
            return (yield from self._through_function(specs, self._enqueue_by_function(specs), trace_context))
        if len(specs) == 1:
            attempt.commit_sent = True
            return [(yield from self._insert(specs[0], trace_context))]
        if (yield CAN_COPY):
            rows: list[tuple[int, bool]] = yield Transaction(self._enqueue_by_copy(specs, attempt, trace_context))
            return rows
        attempt.commit_sent = True
        if any(s.group_key is not None for s in specs):
            # enqueue_jobs() takes no group: one INSERT each, in the caller's transaction.
            inserted = []
            for spec in specs:
                inserted.append((yield from self._insert(spec, trace_context)))
            return inserted
        return (yield from self._through_function(specs, self._enqueue_by_function(specs), trace_context))

    @staticmethod
    def _one_job(spec: JobSpec) -> list[Any]:
        """The parameters of ``_insert_one`` (and the first ones of ``_insert_traced``)."""
        return [spec.task, spec.payload_json, spec.queue, spec.priority, spec.run_at, spec.delay_seconds,
                spec.max_attempts, spec.timeout_seconds, *_backoff_columns(spec), spec.group_key]

    def _through_function(self, specs: Sequence[JobSpec], send: Op[list[tuple[int, bool]]],
                          trace_context: str | None) -> Op[list[tuple[int, bool]]]:
        """``send`` (an enqueue of ``specs`` through a stored function); with a trace
        context or group keys, in one transaction with ``attach_trace_context`` /
        ``attach_group_keys`` for the jobs it created, so that no worker claims one of
        them before its context and group are stored."""
        groups = any(spec.group_key is not None for spec in specs)
        if trace_context is None and not groups:
            return (yield from send)
        rows: list[tuple[int, bool]] = yield Transaction(self._attach(specs, send, trace_context, groups))
        return rows

    def _attach(self, specs: Sequence[JobSpec], send: Op[list[tuple[int, bool]]], trace_context: str | None,
                groups: bool) -> Op[list[tuple[int, bool]]]:
        rows = yield from send
        created = [job_id for job_id, was_created in rows if was_created]
        if created and trace_context is not None:
            yield Statement(self._attach_trace, [created, trace_context])
        if created and groups:
            yield Statement(self._attach_groups, [[job_id for job_id, _ in rows], [spec.group_key for spec in specs]])
        return rows

    def _insert(self, spec: JobSpec, trace_context: str | None = None) -> Op[tuple[int, bool]]:
        """One job without a unique key or parents: one INSERT (five parameters in the common case)."""
        if trace_context is not None:
            rows = yield Statement(self._insert_traced, [*self._one_job(spec), trace_context])
        elif (spec.run_at is None and not spec.delay_seconds and spec.timeout_seconds is None
                and spec.backoff is None and spec.group_key is None):
            rows = yield Statement(self._insert_plain,
                                   [spec.task, spec.payload_json, spec.queue, spec.priority, spec.max_attempts])
        else:
            rows = yield Statement(self._insert_one, self._one_job(spec))
        return int(rows[0][0]), True

    def _enqueue_by_copy(
        self, specs: Sequence[JobSpec], attempt: EnqueueAttempt, trace_context: str | None = None,
    ) -> Op[list[tuple[int, bool]]]:
        # Run as a Transaction: on an autocommit (pooled) connection the batch is its
        # own transaction; on a caller's connection it joins the caller's, which decides.
        ((now, ids, xid),) = yield Statement(self._reserve_ids, [len(specs)])
        attempt.transaction_id, attempt.job_ids = xid, [int(i) for i in ids]
        columns, lines = _copy_lines(specs, ids, now, trace_context)
        # Blocks of rows: the server parses one while the next is formatted.
        yield CopyIn(self._copy_jobs[columns],
                     ["".join(lines[start:start + _COPY_BLOCK]) for start in range(0, len(lines), _COPY_BLOCK)])
        attempt.commit_sent = True  # leaving the transaction sends COMMIT
        return [(int(job_id), True) for job_id in ids]

    @operation
    def transaction_status(self, transaction_id: str) -> Op[str | None]:
        """``pg_xact_status``: 'committed', 'aborted', 'in progress' (None: too old to know)."""
        value = (yield Statement(self._xact_status, [transaction_id]))[0][0]
        return None if value is None else str(value)

    @operation
    def finished_unique_keys(self, keys: Sequence[str]) -> Op[set[str]]:
        """Those of ``keys`` that a job past its live statuses (completed, dead, cancelled) carries."""
        return {str(r[0]) for r in (yield Statement(self._finished_keys, [list(keys)]))}

    @operation
    def end_orphaned_transaction(self, transaction_id: str) -> Op[bool]:
        """Terminate the session still running ``transaction_id``, if any; True if one was signalled."""
        return any(bool(r[0]) for r in (yield Statement(self._end_orphan, [transaction_id])))

    def _enqueue_by_function(self, specs: Sequence[JobSpec]) -> Op[list[tuple[int, bool]]]:
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
            rows = yield Statement(self._enqueue_delayed, params)
        else:
            rows = yield Statement(self._enqueue, [*base, run_at, *rest])
        rows.sort(key=lambda r: r[0])
        return [(int(r[1]), bool(r[2])) for r in rows]
