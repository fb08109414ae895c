"""Issue 9, defects 6 and 7: pgq behind a real PgBouncer in transaction-pooling mode.

The test starts its own PgBouncer (``pgbouncer_service.OwnedPgBouncer``: own
configuration and port, every database forwarded to the test server, a server
pool of 2 so that pgq's connections share server connections) and runs pgq
through it as a user would: thousands of single enqueues from several
threads (psycopg's automatic prepared statements used to fail within a few
hundred: ``prepared statement "_pg3_0" already exists``), bulk enqueues
(COPY), a poll-only worker (``listen=False``), and a worker whose LISTEN goes
to Postgres directly (``listen_database_url``) while everything else goes
through PgBouncer. Then the statement timeout: set per transaction there
(PgBouncer 1.18 refuses a startup ``options`` parameter and a session SET
would leak to its other clients).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import pgq
from pgbouncer_service import OwnedPgBouncer, pgbouncer_version
from pgq.db import execute, translated

pytestmark = pytest.mark.integration

SINGLE_ENQUEUES = 3000
THREADS = 4


@pytest.fixture
def bouncer(server_url: str) -> Iterator[OwnedPgBouncer]:
    with OwnedPgBouncer(server_url, pool_size=2) as owned:
        yield owned


def _completed(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute("SELECT status::text, count(*) FROM pgq.jobs GROUP BY 1").fetchall()
    return {str(status): int(n) for status, n in rows}


def _queue(url: str, **settings: Any) -> pgq.Queue:
    q = pgq.connect(url, **{"poll_interval_seconds": 0.05, **settings})

    @q.task(name="bouncer.add", queue="bouncer")
    def add(a: int, b: int) -> int:
        return a + b

    return q


def test_pgbouncer_version_is_one_without_protocol_level_prepared_statements() -> None:
    # Debian 12 ships 1.18; max_prepared_statements (protocol-level prepared
    # statements through a transaction pool) came with 1.21. The "auto" setting
    # must therefore turn psycopg's prepared statements off behind it.
    assert pgbouncer_version() >= (1, 0)


def test_pgq_works_end_to_end_behind_pgbouncer_in_transaction_mode(
    bouncer: OwnedPgBouncer, db_url: str, conn: psycopg.Connection[Any],
) -> None:
    through = bouncer.url(db_url)
    producer = _queue(through, listen=False)
    errors: list[BaseException] = []

    def enqueue_many_singles(offset: int) -> None:
        try:
            for n in range(SINGLE_ENQUEUES // THREADS):
                producer.enqueue("bouncer.add", {"a": offset, "b": n})
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=enqueue_many_singles, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # Bulk enqueues (COPY) and unique-key enqueues (the stored function), repeatedly.
    for batch in range(10):
        producer.enqueue_many([{"task": "bouncer.add", "payload": {"a": batch, "b": n}} for n in range(200)])
    for n in range(20):
        producer.enqueue("bouncer.add", {"a": 0, "b": n}, unique_key=f"k{n}")
        assert producer.enqueue("bouncer.add", {"a": 0, "b": n}, unique_key=f"k{n}") > 0
    total = SINGLE_ENQUEUES + 10 * 200 + 20
    assert _completed(conn) == {"queued": total}
    # The pool detected the pooler and turned psycopg's prepared statements off.
    assert producer.pool.kwargs["prepare_threshold"] is None
    # Several pgq connections shared two server connections.
    pools = [p for p in bouncer.show("pools", db_url) if p["database"] == conn.info.dbname]
    assert pools and all(int(p["sv_active"]) + int(p["sv_idle"]) + int(p["sv_used"]) <= 2 for p in pools)

    # A poll-only worker through PgBouncer.
    poll_only = _queue(through, listen=False)
    w = poll_only.worker(concurrency=8, install_signal_handlers=False)
    w.run(burst=True)
    assert _completed(conn) == {"completed": total}
    assert w.counters.errors == 0
    producer.close()
    poll_only.close()


def test_a_worker_listens_on_the_direct_url_and_claims_through_pgbouncer(
    bouncer: OwnedPgBouncer, db_url: str, conn: psycopg.Connection[Any],
) -> None:
    through = bouncer.url(db_url)
    # A poll so slow that only a NOTIFY can wake the worker within the wait below.
    q = _queue(through, listen=True, listen_database_url=db_url, poll_interval_seconds=120.0)
    w = q.worker(concurrency=4, install_signal_handlers=False)
    runner = threading.Thread(target=w.run)
    runner.start()
    try:
        for n in range(5):  # each wakes the idle worker by NOTIFY (sent through PgBouncer)
            job_id = q.enqueue("bouncer.add", {"a": n, "b": 1})
            assert q.wait(job_id, timeout=20) == n + 1
        # Enough traffic through the shared server connections to hit prepared-statement clashes.
        ids = [q.enqueue("bouncer.add", {"a": 1, "b": n}) for n in range(600)]
        assert [q.wait(i, timeout=60) for i in ids] == [n + 1 for n in range(600)]
        listening = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        ).fetchone()
        assert listening is not None and listening[0] == 1  # the direct LISTEN connection
    finally:
        w.stop()
        runner.join(timeout=60)
    assert not runner.is_alive()
    q.close()
    assert _completed(conn) == {"completed": 605}


def test_statement_timeout_behind_pgbouncer_is_per_transaction_and_does_not_leak(
    bouncer: OwnedPgBouncer, db_url: str, connect: Any,
) -> None:
    through = bouncer.url(db_url)
    q = pgq.connect(through, statement_timeout_seconds=0.2, strict_tasks=False)
    with q.pool.connection() as pooled:
        with pytest.raises(pgq.StatementTimeout), translated(through):
            execute(pooled, "SELECT pg_sleep(2)")
        # Under the limit it runs; the connection is fine after a timeout.
        assert execute(pooled, "SELECT pg_sleep(0.01), 1")[0][1] == 1
    # A pgq operation that waits on a lock longer than the timeout fails the same way, and writes nothing.
    locker = connect(autocommit=False)
    locker.execute("LOCK TABLE pgq.jobs IN ACCESS EXCLUSIVE MODE")
    try:
        with pytest.raises(pgq.StatementTimeout):
            q.enqueue("t.locked", {})
    finally:
        locker.rollback()
    assert connect().execute("SELECT count(*) FROM pgq.jobs").fetchone() == (0,)
    # The setting lived in pgq's transactions only: another client of the same
    # PgBouncer (a plain session, prepared statements off) sees the server default.
    with psycopg.connect(through, autocommit=True, prepare_threshold=None) as other:
        for _ in range(5):
            assert other.execute("SHOW statement_timeout").fetchone() == ("0",)
    q.close()


def test_a_startup_options_parameter_is_refused_by_this_pgbouncer(bouncer: OwnedPgBouncer, db_url: str) -> None:
    # Why pgq never sends the timeout as a startup option through a pooler.
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter"):
        psycopg.connect(bouncer.url(db_url), options="-c statement_timeout=1000")
