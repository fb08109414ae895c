"""Issue 9, defect 8: an enqueue whose connection breaks.

Real broken connections: pgq talks to Postgres through a test-owned TCP proxy
(``tcp_proxy.CuttingProxy``) that cuts the connection at a chosen point, and
the test counts the rows in Postgres (over a direct connection) each time:

- the server hung up while pgq's pooled connection was idle: nothing was sent,
  pgq replaces the connection and enqueues once;
- the message that commits never reached the server: a COPY batch is sent
  again (the database says its transaction aborted); a single INSERT cannot
  tell this from the next case, so it raises ``EnqueueOutcomeUnknown``;
- the commit reached the server and only the reply was lost: the COPY batch
  is found committed (its ids are returned, no second copy); a job with a
  unique key is sent again and resolves to itself; a plain single INSERT
  raises ``EnqueueOutcomeUnknown`` (never a second job).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

import pgq
from tcp_proxy import CuttingProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(db_url: str) -> Iterator[CuttingProxy]:
    params = conninfo_to_dict(db_url)
    with CuttingProxy(str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)) as owned:
        yield owned


@pytest.fixture
def q(proxy: CuttingProxy, db_url: str) -> Iterator[pgq.Queue]:
    queue = pgq.connect(proxy.url(db_url), strict_tasks=False, listen=False)
    yield queue
    queue.close()


def _jobs(conn: psycopg.Connection[Any]) -> list[tuple[int, str]]:
    return [(int(r[0]), str(r[1])) for r in conn.execute("SELECT id, task FROM pgq.jobs ORDER BY id").fetchall()]


def test_a_connection_the_server_closed_while_idle_is_replaced_and_the_job_enqueued_once(
    q: pgq.Queue, proxy: CuttingProxy, conn: psycopg.Connection[Any],
) -> None:
    first = q.enqueue("t.first", {})  # opens the pool: its connections now rest idle
    proxy.cut_all()
    second = q.enqueue("t.second", {})
    assert proxy.cuts and proxy.cuts[0].startswith("all")
    assert _jobs(conn) == [(first, "t.first"), (second, "t.second")]


def test_a_batch_whose_commit_never_reached_the_server_is_sent_again_once(
    q: pgq.Queue, proxy: CuttingProxy, conn: psycopg.Connection[Any],
) -> None:
    q.enqueue("t.warm", {})
    proxy.cut_before(b"COMMIT")
    ids = q.enqueue_many([{"task": "t.batch", "payload": {"n": n}} for n in range(50)])
    assert proxy.cuts == ["before b'COMMIT'"]
    rows = [r for r in _jobs(conn) if r[1] == "t.batch"]
    assert [job_id for job_id, _ in rows] == ids and len(ids) == 50


def test_a_batch_whose_commit_reply_was_lost_is_found_committed_not_sent_twice(
    q: pgq.Queue, proxy: CuttingProxy, conn: psycopg.Connection[Any],
) -> None:
    q.enqueue("t.warm", {})
    proxy.cut_reply_after(b"COMMIT")
    ids = q.enqueue_many([{"task": "t.batch", "payload": {"n": n}} for n in range(50)])
    assert proxy.cuts == ["reply dropped"]
    rows = [r for r in _jobs(conn) if r[1] == "t.batch"]
    assert [job_id for job_id, _ in rows] == ids and len(ids) == 50


def test_a_single_insert_cut_before_it_reached_the_server_raises_outcome_unknown(
    q: pgq.Queue, proxy: CuttingProxy, conn: psycopg.Connection[Any],
) -> None:
    q.enqueue("t.warm", {})
    proxy.cut_before(b"INSERT INTO")
    with pytest.raises(pgq.EnqueueOutcomeUnknown) as info:
        q.enqueue("t.cut", {"n": 1})
    assert isinstance(info.value, pgq.DatabaseError)
    assert proxy.cuts == ["before b'INSERT INTO'"]
    assert info.value.job_ids is None and info.value.unique_keys is None
    assert [r for r in _jobs(conn) if r[1] == "t.cut"] == []  # pgq did not guess "it committed"


def test_a_single_insert_whose_reply_was_lost_raises_outcome_unknown_and_is_not_sent_twice(
    q: pgq.Queue, proxy: CuttingProxy, conn: psycopg.Connection[Any],
) -> None:
    q.enqueue("t.warm", {})
    proxy.cut_reply_after(b"INSERT INTO")
    with pytest.raises(pgq.EnqueueOutcomeUnknown, match="may or may not have been committed"):
        q.enqueue("t.cut", {"n": 1})
    assert proxy.cuts == ["reply dropped"]
    assert len([r for r in _jobs(conn) if r[1] == "t.cut"]) == 1  # committed once, not retried
    # The queue goes on working on a fresh connection.
    assert q.enqueue("t.after", {}) > 0


def test_a_unique_job_whose_reply_was_lost_is_sent_again_and_resolves_to_itself(
    q: pgq.Queue, proxy: CuttingProxy, conn: psycopg.Connection[Any],
) -> None:
    q.enqueue("t.warm", {})
    proxy.cut_reply_after(b"enqueue_jobs(")
    job_id = q.enqueue("t.unique", {"n": 1}, unique_key="order:7")
    assert proxy.cuts == ["reply dropped"]
    assert [r for r in _jobs(conn) if r[1] == "t.unique"] == [(job_id, "t.unique")]


def test_a_unique_job_that_committed_and_finished_before_the_resend_is_not_enqueued_again(
    q: pgq.Queue, proxy: CuttingProxy, conn: psycopg.Connection[Any],
) -> None:
    # The chaos suite's Postgres restart found it: the reply of a committed unique-key
    # enqueue is lost, a worker runs the job before the client sends it again, and the
    # key (which deduplicates against live jobs only) let a second copy in.
    q.enqueue("t.warm", {})

    def a_worker_finishes_it() -> None:
        conn.execute("UPDATE pgq.jobs SET status = 'completed', finished_at = now() WHERE unique_key = 'order:9'")

    proxy.on_reply_dropped = a_worker_finishes_it
    proxy.cut_reply_after(b"enqueue_jobs(")
    with pytest.raises(pgq.EnqueueOutcomeUnknown) as info:
        q.enqueue("t.unique", {"n": 1}, unique_key="order:9")
    assert proxy.cuts == ["reply dropped"]
    assert info.value.unique_keys == ["order:9"]
    assert len([r for r in _jobs(conn) if r[1] == "t.unique"]) == 1  # before: 2 (sent again)


def test_a_unique_job_with_on_duplicate_raise_cannot_be_retried_and_says_so(
    q: pgq.Queue, proxy: CuttingProxy, conn: psycopg.Connection[Any],
) -> None:
    q.enqueue("t.warm", {})
    proxy.cut_reply_after(b"enqueue_jobs(")
    with pytest.raises(pgq.EnqueueOutcomeUnknown) as info:
        q.enqueue("t.unique", {"n": 1}, unique_key="order:8", on_duplicate="raise")
    assert info.value.unique_keys == ["order:8"]
    assert len([r for r in _jobs(conn) if r[1] == "t.unique"]) == 1


def test_a_server_error_is_not_a_broken_connection_and_is_not_retried(
    q: pgq.Queue, conn: psycopg.Connection[Any],
) -> None:
    # A CHECK constraint refuses the row: the server answered, nothing was written.
    conn.execute("ALTER TABLE pgq.jobs ADD CONSTRAINT test_no_x CHECK (task <> 't.refused')")
    with pytest.raises(pgq.ValidationError):
        q.enqueue("t.refused", {})
    assert _jobs(conn) == []
