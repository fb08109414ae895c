"""Pools of connections to Postgres: how they are made, and a checkout that never hands out a
connection the server hung up on.

``make_pool`` / ``make_async_pool`` probe the database once (a clear error when it cannot be
reached) and adapt to a transaction-mode pooler in between (PgBouncer: no prepared
statements, the statement timeout set per transaction; ``pool_options``).
``live_connection`` is the checkout of every enqueue: a pooled connection that the server
closed while it rested idle is replaced before any statement is sent on it (``hung_up``:
one ``poll``, no round trip). Connections themselves and the translation of driver errors
are ``pgq.db``'s.
"""

from __future__ import annotations

import contextlib
import logging
import select
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pgq.db import PgqAsyncConnection, PgqConnection, check_url, connect, connect_async, driver_url, translated
from pgq.settings import redact_url

log = logging.getLogger("pgq.db")

# The server's own process id, to compare with the one the connection was given.
_SERVER_PID = "SELECT pg_backend_pid()"


def behind_pooler(conn: psycopg.Connection[Any]) -> bool:
    """True when a connection pooler sits between this connection and Postgres.

    A server announces its process id when a session starts (it is also the
    cancel key); PgBouncer and its kin make up their own for each client, so it
    differs from the ``pg_backend_pid()`` of the server process that answers.
    """
    row = conn.execute(_SERVER_PID, prepare=False).fetchone()
    return row is not None and int(row[0]) != conn.info.backend_pid


def pool_options(url: str, *, behind_a_pooler: bool, statement_timeout_seconds: float,
                 prepared_statements: str) -> tuple[dict[str, Any], int]:
    """The connection kwargs for a pool, and the per-transaction timeout (ms, or 0).

    Prepared statements: psycopg prepares a statement the fifth time it runs it,
    under a name (``_pg3_0``) that is unique per client connection only; behind
    a transaction-mode pooler another client's statement of the same name lives
    on the shared server connection ("prepared statement "_pg3_0" already
    exists"), so "auto" turns them off there (``prepare_threshold=None``).
    Statement timeout: a startup ``options`` parameter on a direct connection
    (no round trip); a pooler refuses it (PgBouncer before 1.20: "unsupported
    startup parameter: options") or drops it, and a session ``SET`` would leak to
    the pooler's other clients, so there it is set per transaction instead.
    """
    kwargs: dict[str, Any] = {"autocommit": True}
    if prepared_statements == "off" or (prepared_statements == "auto" and behind_a_pooler):
        kwargs["prepare_threshold"] = None
    timeout_ms = max(1, round(statement_timeout_seconds * 1000)) if statement_timeout_seconds > 0 else 0
    if timeout_ms and behind_a_pooler:
        return kwargs, timeout_ms
    if timeout_ms:
        existing = psycopg.conninfo.conninfo_to_dict(driver_url(url)).get("options") or ""
        kwargs["options"] = f"{existing} -c statement_timeout={timeout_ms}".strip()
    return kwargs, 0


def make_pool(
    url: str,
    *,
    max_size: int,
    name: str = "pgq",
    min_size: int = 1,
    statement_timeout_seconds: float = 0.0,
    prepared_statements: str = "auto",
) -> ConnectionPool[PgqConnection]:
    """Create (and open) a bounded pool of autocommit connections to ``url``.

    One probe connection first: it fails fast with a clear message when the
    database cannot be reached, and tells whether a pooler sits in between
    (see ``pool_options``; logged at INFO).
    """
    check_url(url)
    # Fail fast with a clear message when the database cannot be reached at all.
    with translated(url), connect(url) as probe:
        pooled = behind_pooler(probe)
    arguments, local_timeout_ms = _pool_arguments(url, pooled, name, min_size, max_size, statement_timeout_seconds,
                                                  prepared_statements)

    def configure(conn: PgqConnection) -> None:
        conn.local_statement_timeout_ms = local_timeout_ms

    pool = ConnectionPool(connection_class=PgqConnection, configure=configure, **arguments)
    pool.open()
    return pool


async def make_async_pool(
    url: str,
    *,
    max_size: int,
    name: str = "pgq-async",
    min_size: int = 1,
    statement_timeout_seconds: float = 0.0,
    prepared_statements: str = "auto",
) -> AsyncConnectionPool[PgqAsyncConnection]:
    """``make_pool`` for asyncio: an open ``AsyncConnectionPool`` (no thread: its
    workers are tasks on the running event loop, which it belongs to).

    Its ``min_size`` connections are open when it returns. psycopg_pool opens more
    (up to ``max_size``) in a background task; psycopg 3.3 turns the cancellation of
    a connection attempt into an ``OperationalError``, so an attempt still running
    when ``asyncio.run()`` cancels every task leaves that task alive and the loop
    never ends. ``Queue`` therefore passes ``min_size=max_size``: no background
    attempt once the pool is open (only when a broken connection is replaced).
    """
    check_url(url)
    with translated(url):
        async with await connect_async(url) as probe:
            row = await (await probe.execute(_SERVER_PID, prepare=False)).fetchone()
            pooled = row is not None and int(row[0]) != probe.info.backend_pid
    arguments, local_timeout_ms = _pool_arguments(url, pooled, name, min_size, max_size, statement_timeout_seconds,
                                                  prepared_statements)

    async def configure(conn: PgqAsyncConnection) -> None:
        conn.local_statement_timeout_ms = local_timeout_ms

    pool = AsyncConnectionPool(connection_class=PgqAsyncConnection, configure=configure, **arguments)
    await pool.open(wait=True, timeout=30.0)
    return pool


def _pool_arguments(url: str, pooled: bool, name: str, min_size: int, max_size: int, statement_timeout_seconds: float,
                    prepared_statements: str) -> tuple[dict[str, Any], int]:
    """The arguments of a (sync or async) pool whose probe found (or not) a pooler, said
    at INFO (see ``pool_options``), and the per-transaction statement timeout (ms, or 0)."""
    kwargs, local_timeout_ms = pool_options(url, behind_a_pooler=pooled, statement_timeout_seconds=statement_timeout_seconds,
                                            prepared_statements=prepared_statements)
    if pooled:
        log.info("%s: a connection pooler answers at %s: prepared statements %s, statement timeout %s",
                 name, redact_url(url), "off" if kwargs.get("prepare_threshold", 5) is None else "on",
                 f"{local_timeout_ms} ms per transaction" if local_timeout_ms else "off")
    arguments = {"conninfo": driver_url(url), "min_size": min(min_size, max_size), "max_size": max_size,
                 "kwargs": kwargs, "name": name, "open": False, "timeout": 30.0, "reconnect_timeout": 60.0}
    return arguments, local_timeout_ms


def hung_up(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """True when this idle connection is closed, broken, or the server spoke on it unasked.

    A pooled connection rests idle between operations; if the server went away
    meanwhile (a restart, a killed backend, a pooler or proxy that closed it),
    its socket already reads as end-of-file, or holds the server's farewell
    error. Seen before a statement is sent, the connection can be replaced with
    nothing sent. pgq's pooled connections do not LISTEN, so nothing else arrives
    unasked. One ``poll`` system call, no round trip.
    """
    if conn.closed or conn.broken:
        return True
    if conn.pgconn.transaction_status != TransactionStatus.IDLE:  # not conn.info: a new object per call
        return False
    try:
        fd = conn.fileno()
    except psycopg.Error:
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


class LiveConnection:
    """The context manager of ``live_connection``: a class, not a generator (it runs on
    every enqueue, where a generator-based one and psycopg's ``with conn`` cost more
    than the rest of the checkout)."""

    __slots__ = ("conn", "pool")

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool
        self.conn: Any = None

    def __enter__(self) -> Any:
        pool = self.pool
        for _ in range(pool.max_size + 1):
            conn = pool.getconn()
            if not hung_up(conn):
                break
            log.info("a pooled connection was closed by the server while idle; replacing it")
            conn.close()
            pool.putconn(conn)
        else:
            conn = pool.getconn()
        self.conn = conn
        return conn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        conn = self.conn
        try:
            if not conn.closed and conn.pgconn.transaction_status != TransactionStatus.IDLE:
                # A transaction left open: commit it, or roll it back after an error, as
                # psycopg's ``with conn:`` does (on an idle autocommit connection both do nothing).
                conn.__exit__(exc_type, exc, tb)
        finally:
            self.pool.putconn(conn)


def live_connection(pool: ConnectionPool[Any]) -> LiveConnection:
    """``pool.connection()``, but a connection the server hung up on is replaced first.

    The dead connection is closed (the pool opens a new one in its place) and
    the next is taken, with no statement sent on it; ``PoolTimeout`` if none can be had.
    """
    return LiveConnection(pool)


@contextlib.asynccontextmanager
async def live_connection_async(pool: AsyncConnectionPool[Any]) -> AsyncIterator[Any]:
    """``live_connection`` for an ``AsyncConnectionPool``."""
    for _ in range(pool.max_size + 1):
        conn = await pool.getconn()
        if not hung_up(conn):
            break
        log.info("a pooled connection was closed by the server while idle; replacing it")
        await conn.close()
        await pool.putconn(conn)
    else:
        conn = await pool.getconn()
    try:
        async with conn:
            yield conn
    finally:
        await pool.putconn(conn)


