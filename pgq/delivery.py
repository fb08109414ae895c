"""Delivering an enqueue when the connection breaks: retry what is safe, say what is not known.

An enqueue is one transaction. If the connection breaks before the message
that commits it was sent, nothing was committed and the enqueue is simply sent
again on a fresh connection. If it breaks after, the jobs may exist or not:
the bulk (COPY) path asks the database, on another connection, whether its
transaction committed (``pg_xact_status``); jobs that all carry a unique key
are sent again, the key deduplicating against the live job, unless a finished
job carries one of the keys (the first send may have committed and run); anything else
raises ``EnqueueOutcomeUnknown`` with what is known. ``queue.py`` runs
``deliver`` (an operation, for its sync and async executors alike); the
statements are in ``pgq.queries``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pgq.clock import Clock, SystemClock
from pgq.db import translate
from pgq.errors import DatabaseError, EnqueueOutcomeUnknown
from pgq.job import JobSpec
from pgq.operations import Attempt, Op, Sent, Sleep
from pgq.queries import EnqueueAttempt, Queries

log = logging.getLogger("pgq.queue")

# Sends of one enqueue: the first, and up to two more after failures that
# provably committed nothing (each on a fresh connection; the pool itself waits
# up to its timeout for one when the database is down).
MAX_SENDS = 3
# How long to ask the database whether a broken COPY transaction committed.
RESOLVE_SECONDS = 5.0


def deliver(
    queries: Queries,
    specs: Sequence[JobSpec],
    *,
    idempotent: bool,
    url: str | None,
    clock: Clock | None = None,
    with_parents: bool | None = None,
    trace_context: str | None = None,
) -> Op[list[tuple[int, bool]]]:
    """Enqueue ``specs`` on a pooled connection; return ``(job_id, created)`` in order.

    An operation (``pgq.operations``): each send is an ``Attempt`` on a fresh pooled
    connection, so the same rules serve ``Queue.enqueue`` and ``enqueue_async``.

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
        sent: Sent = yield Attempt(queries.enqueue_jobs.op(specs, attempt, with_parents, trace_context))
        exc = sent.error
        if exc is None:
            rows: list[tuple[int, bool]] = sent.value
            return rows
        if not sent.lost:
            # No connection could be had, or the server refused the statement
            # (its transaction rolled back): nothing was written.
            raise translate(exc, url) from exc
        outcome = yield from _outcome(queries, specs, attempt, idempotent, url, clock)
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
    queries: Queries, specs: Sequence[JobSpec], attempt: EnqueueAttempt, idempotent: bool, url: str | None,
    clock: Clock,
) -> Op[str]:
    """'aborted' (safe to send again), 'committed' (COPY ids are in), or 'unknown'."""
    if not attempt.commit_sent:
        return "aborted"  # the COMMIT (or the autocommit statement) never left
    if attempt.transaction_id is not None:
        return (yield from _resolve(queries, attempt.transaction_id, url, clock))
    if idempotent and (yield from _keys_settle_a_resend(queries, specs, url)):
        return "aborted"
    return "unknown"


def _keys_settle_a_resend(queries: Queries, specs: Sequence[JobSpec], url: str | None) -> Op[bool]:
    """True when sending unique-key jobs again cannot run one twice.

    A unique key deduplicates against the live job only. If the first send
    committed and a worker finished the job before the second send arrives (a
    database restart takes seconds; workers reconnect too), the second send
    would create it again. So the jobs are sent again only while no finished job
    carries one of their keys; otherwise the outcome is unknown (the finished
    job may be this enqueue's, or an older one with the same key).
    """
    keys = [s.unique_key for s in specs if s.unique_key is not None]
    sent: Sent = yield Attempt(queries.finished_unique_keys.op(keys))
    if sent.error is not None:
        log.info("cannot check the unique keys of a broken enqueue: %s", translate(sent.error, url))
        return False
    finished: set[str] = sent.value
    if finished:
        log.warning("the connection broke after a unique-key enqueue was sent, and %d of its key(s) belong to "
                    "finished jobs; not sending it again", len(finished))
    return not finished


def _resolve(queries: Queries, transaction_id: str, url: str | None, clock: Clock) -> Op[str]:
    """Ask the database whether ``transaction_id`` committed, for up to ``RESOLVE_SECONDS``.

    While it is still in progress (its backend has not noticed the broken
    connection yet) that backend is terminated once: the transaction then ends
    one way or the other at once.
    """
    deadline = clock.monotonic() + RESOLVE_SECONDS
    delay = 0.01
    ended = False
    while True:
        sent: Sent = yield Attempt(_ask(queries, transaction_id, end=not ended))
        if sent.error is not None:
            log.info("cannot ask whether transaction %s committed yet: %s", transaction_id,
                     translate(sent.error, url))
        else:
            status, signalled = sent.value
            if status in ("committed", "aborted"):
                return str(status)
            if status is None:
                return "unknown"
            ended = ended or signalled
        remaining = deadline - clock.monotonic()
        if remaining <= 0:
            return "unknown"
        yield Sleep(min(delay, remaining))
        delay = min(delay * 2, 0.5)


def _ask(queries: Queries, transaction_id: str, *, end: bool) -> Op[tuple[str | None, bool]]:
    """The transaction's status; still in progress and ``end``: terminate its session (signalled?)."""
    status = yield from queries.transaction_status.op(transaction_id)
    if status in ("committed", "aborted") or status is None or not end:
        return status, False
    return status, (yield from queries.end_orphaned_transaction.op(transaction_id))


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
