"""``pgq.pool.live_connection`` (the checkout of every enqueue) and ``pgq.db.execute``: what a
borrowed connection leaves behind, and which statements return rows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

from pgq.db import execute
from pgq.pool import live_connection, make_pool

pytestmark = pytest.mark.integration


@pytest.fixture
def pool(db_url: str, conn: psycopg.Connection[Any]) -> Iterator[ConnectionPool[Any]]:
    conn.execute("CREATE TABLE live_probe (n int)")
    one = make_pool(db_url, max_size=1, name="pgq-test-live")
    try:
        yield one
    finally:
        one.close()


def probes(conn: psycopg.Connection[Any]) -> list[int]:
    return [row[0] for row in conn.execute("SELECT n FROM live_probe ORDER BY n")]


def test_a_transaction_left_open_is_committed_on_a_clean_exit(pool: ConnectionPool[Any],
                                                               conn: psycopg.Connection[Any]) -> None:
    with live_connection(pool) as borrowed:
        borrowed.execute("BEGIN")
        borrowed.execute("INSERT INTO live_probe VALUES (1)")
    assert probes(conn) == [1]
    with live_connection(pool) as again:  # the pool's only connection, back idle
        assert again is borrowed
        assert again.pgconn.transaction_status == TransactionStatus.IDLE


def test_a_transaction_left_open_is_rolled_back_after_an_error(pool: ConnectionPool[Any],
                                                               conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(RuntimeError), live_connection(pool) as borrowed:
        borrowed.execute("BEGIN")
        borrowed.execute("INSERT INTO live_probe VALUES (2)")
        raise RuntimeError("the caller failed")
    assert probes(conn) == []
    with live_connection(pool) as again:
        assert again is borrowed
        assert again.pgconn.transaction_status == TransactionStatus.IDLE


def test_a_failed_statement_leaves_the_connection_usable(pool: ConnectionPool[Any]) -> None:
    with pytest.raises(psycopg.errors.DivisionByZero), live_connection(pool) as borrowed:
        borrowed.execute("SELECT 1 / 0")
    with live_connection(pool) as again:
        assert again is borrowed
        assert again.execute("SELECT 2").fetchone() == (2,)


def test_execute_returns_rows_only_for_statements_with_columns(conn: psycopg.Connection[Any]) -> None:
    assert execute(conn, "SELECT 1, 'a'") == [(1, "a")]
    assert execute(conn, "SELECT 1 WHERE false") == []
    assert execute(conn, "SELECT") == []  # a result with no columns
    assert execute(conn, "SET application_name = 'pgq-test'") == []
    with conn.transaction():
        assert execute(conn, "CREATE TEMP TABLE t (n int)") == []
        assert execute(conn, "INSERT INTO t VALUES (1), (2)") == []
        assert execute(conn, "INSERT INTO t VALUES (3) RETURNING n") == [(3,)]
