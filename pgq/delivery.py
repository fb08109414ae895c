"""Delivering an enqueue when the connection breaks: retry what is safe, say what is not known.

An enqueue is one transaction. If the connection breaks before the message
that commits it was sent, nothing was committed and the enqueue is simply sent
again on a fresh connection. If it breaks after, the jobs may exist or not:
the bulk (COPY) path asks the database, on another connection, whether its
transaction committed (``pg_xact_status``); jobs that all carry a unique key
are sent again, the key deduplicating against the live job, unless a finished
job carries one of the keys (the first send may have committed and run); anything else
raises ``EnqueueOutcomeUnknown`` with what is known. ``queue.py`` calls
``deliver``; the statements are in ``pgq.queries``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from pgq.clock import Clock, SystemClock
from pgq.db import connection_lost, live_connection, translate
from pgq.errors import DatabaseError, EnqueueOutcomeUnknown, PgqError
from pgq.job import JobSpec
from pgq.queries import EnqueueAttempt, Queries

log = logging.getLogger("pgq.queue")

# Sends of one enqueue: the first, and up to two more after failures that
# provably committed nothing (each on a fresh connection; the pool itself waits
# up to its timeout for one when the database is down).
MAX_SENDS = 3
# How long to ask the database whether a broken COPY transaction committed.
RESOLVE_SECONDS = 5.0


def deliver(
    pool: ConnectionPool[Any],
    queries: Queries,
    specs: Sequence[JobSpec],
    *,
    idempotent: bool,
    url: str | None,
    clock: Clock | None = None,
    sleep: Callable[[float], None] = time.sleep,
    with_parents: bool | None = None,
    trace_context: str | None = None,
) -> list[tuple[int, bool]]:
    """Enqueue ``specs`` on a pooled connection; return ``(job_id, created)`` in order.

    Args:
        idempotent: sending the jobs twice cannot create two (every job has a
            unique key and a duplicate resolves to the live job's id).
        with_parents: some spec has ``depends_on`` (None: ``queries`` looks).
        trace_context: the producer's trace context to store in the jobs (``pgq.tracing``).
    Raises:
        EnqueueOutcomeUnknown: the connection broke after the commit may have
            reached the database, and the database could not say.
        DatabaseError (or a subclass): the enqueue failed and nothing was written.
    """
    clock = clock or SystemClock()
    for send in range(1, MAX_SENDS + 1):
        attempt = EnqueueAttempt()
        conn: psycopg.Connection[Any] | None = None
        try:
            with live_connection(pool) as conn:
                return queries.enqueue_jobs(conn, specs, attempt, with_parents, trace_context)
        except PgqError:
            raise
        except (psycopg.Error, PoolTimeout) as exc:
            if isinstance(exc, PoolTimeout) or not connection_lost(exc, conn):
                # No connection could be had, or the server refused the statement
                # (its transaction rolled back): nothing was written.
                raise translate(exc, url) from exc
            outcome = _outcome(pool, queries, specs, attempt, idempotent, url, clock, sleep)
            if outcome == "committed":
                assert attempt.job_ids is not None
                log.warning("the connection broke during an enqueue's COMMIT; it had committed (%d job(s))",
                            len(attempt.job_ids))
                return [(job_id, True) for job_id in attempt.job_ids]
            if outcome == "unknown":
                raise _unknown(specs, attempt, exc, url) from exc
            if send == MAX_SENDS:
                raise DatabaseError(
                    f"the connection broke {MAX_SENDS} times before the enqueue was committed; "
                    f"nothing was written: {translate(exc, url)}"
                ) from exc
            log.warning("the connection broke during an enqueue (%s); nothing was committed, sending it again",
                        translate(exc, url))
    raise AssertionError("unreachable")  # pragma: no cover


def _outcome(
    pool: ConnectionPool[Any], queries: Queries, specs: Sequence[JobSpec], attempt: EnqueueAttempt,
    idempotent: bool, url: str | None, clock: Clock, sleep: Callable[[float], None],
) -> str:
    """'aborted' (safe to send again), 'committed' (COPY ids are in), or 'unknown'."""
    if not attempt.commit_sent:
        return "aborted"  # the COMMIT (or the autocommit statement) never left
    if attempt.transaction_id is not None:
        return _resolve(pool, queries, attempt.transaction_id, url, clock, sleep)
    if idempotent and _keys_settle_a_resend(pool, queries, specs, url):
        return "aborted"
    return "unknown"


def _keys_settle_a_resend(pool: ConnectionPool[Any], queries: Queries, specs: Sequence[JobSpec],
                          url: str | None) -> bool:
    """True when sending unique-key jobs again cannot run one twice.

    A unique key deduplicates against the live job only. If the first send
    committed and a worker finished the job before the second send arrives (a
    database restart takes seconds; workers reconnect too), the second send
    would create it again. So the jobs are sent again only while no finished job
    carries one of their keys; otherwise the outcome is unknown (the finished
    job may be this enqueue's, or an older one with the same key).
    """
    keys = [s.unique_key for s in specs if s.unique_key is not None]
    try:
        with live_connection(pool) as conn:
            finished = queries.finished_unique_keys(conn, keys)
    except (psycopg.Error, PoolTimeout) as exc:
        log.info("cannot check the unique keys of a broken enqueue: %s", translate(exc, url))
        return False
    if finished:
        log.warning("the connection broke after a unique-key enqueue was sent, and %d of its key(s) belong to "
                    "finished jobs; not sending it again", len(finished))
    return not finished


def _resolve(
    pool: ConnectionPool[Any], queries: Queries, transaction_id: str, url: str | None, clock: Clock,
    sleep: Callable[[float], None],
) -> str:
    """Ask the database whether ``transaction_id`` committed, for up to ``RESOLVE_SECONDS``.

    While it is still in progress (its backend has not noticed the broken
    connection yet) that backend is terminated once: the transaction then ends
    one way or the other at once.
    """
    deadline = clock.monotonic() + RESOLVE_SECONDS
    delay = 0.01
    ended = False
    while True:
        try:
            with live_connection(pool) as conn:
                status = queries.transaction_status(conn, transaction_id)
                if status in ("committed", "aborted"):
                    return status
                if status is None:
                    return "unknown"
                if not ended:
                    ended = queries.end_orphaned_transaction(conn, transaction_id)
        except (psycopg.Error, PoolTimeout) as exc:
            log.info("cannot ask whether transaction %s committed yet: %s", transaction_id, translate(exc, url))
        remaining = deadline - clock.monotonic()
        if remaining <= 0:
            return "unknown"
        sleep(min(delay, remaining))
        delay = min(delay * 2, 0.5)


def _unknown(
    specs: Sequence[JobSpec], attempt: EnqueueAttempt, cause: BaseException, url: str | None
) -> EnqueueOutcomeUnknown:
    keys = [s.unique_key for s in specs]
    what = f"{len(specs)} job(s)" if len(specs) > 1 else "the job"
    known = []
    if attempt.job_ids:
        known.append(f"ids {attempt.job_ids[0]}..{attempt.job_ids[-1]}" if len(attempt.job_ids) > 1
                     else f"id {attempt.job_ids[0]}")
    if attempt.transaction_id:
        known.append(f"transaction {attempt.transaction_id}: ask pg_xact_status() whether it committed")
    detail = f" ({'; '.join(known)})" if known else ""
    return EnqueueOutcomeUnknown(
        f"the connection broke after the enqueue of {what} was sent; it may or may not have been committed"
        f"{detail}: {translate(cause, url)}",
        job_ids=attempt.job_ids,
        transaction_id=attempt.transaction_id,
        unique_keys=keys if any(k is not None for k in keys) else None,
    )
