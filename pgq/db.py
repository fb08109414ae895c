"""Connections to Postgres and the translation of driver errors into pgq errors.

Runtime connections are psycopg 3 connections in autocommit mode: every pgq
operation is one stored-function call, hence one statement, one transaction
and one round trip. Pools are bounded (``Settings.pool_size``). A caller's
SQLAlchemy connection is also accepted wherever a transactional enqueue makes
sense; its driver-level cursor runs the same SQL inside the caller's
transaction. This module also waits for a database at start; pools (and
their adaptation to a transaction-mode pooler such as PgBouncer) are
``pgq.pool``'s. Queue semantics live elsewhere.

The few statements here are about the connection itself, not pgq's schema, so
they live next to the code that needs them (``pgq.queries`` imports this module).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg_pool import PoolClosed, PoolTimeout

from pgq.clock import Clock, SystemClock
from pgq.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailable,
    DuplicateJob,
    InvalidTransition,
    InvalidGraph,
    JobNotFound,
    PgqError,
    StatementTimeout,
    ValidationError,
    WorkerDraining,
)
from pgq.settings import password_candidates, redact_url

log = logging.getLogger("pgq.db")

# SQLSTATEs raised by pgq's stored functions (see db/README.md).
_PGQ_CODES: dict[str, type[PgqError]] = {
    "PQ001": JobNotFound,
    "PQ002": InvalidTransition,
    "PQ004": ValidationError,
    "PQ005": WorkerDraining,
    "PQ006": InvalidGraph,
}
# Standard SQLSTATEs that mean "bad input", not "database broken".
_INPUT_CODES = {
    "23514",  # check_violation
    "23502",  # not_null_violation
    "22P02",  # invalid_text_representation
    "22021",  # character_not_in_repertoire (NUL bytes)
    "22003",  # numeric_value_out_of_range
    "22008",  # datetime_field_overflow
    "22007",  # invalid_datetime_format
    "2202E",  # array_subscript_error
    "22023",  # invalid_parameter_value
    "22P05",  # untranslatable_character
    "54000",  # program_limit_exceeded (e.g. jsonb too large)
}


def quote_ident(name: str) -> str:
    """Quote an identifier (schema, channel) for SQL text, the psycopg way."""
    return sql.Identifier(name).as_string(None)


def driver_url(url: str) -> str:
    """Return ``url`` as libpq accepts it (drops a SQLAlchemy ``+driver`` suffix)."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres+psycopg://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    return url


def _scrub(message: str, url: str) -> str:
    """Remove any password that ``url`` carries from ``message``.

    Besides the password libpq parses, every password-like part of the text is
    scrubbed: libpq quotes an unparsable URL whole in its error, and reads the
    tail of a password typed with a raw "@" as the host name.
    """
    secrets = password_candidates(url)
    try:
        password = psycopg.conninfo.conninfo_to_dict(driver_url(url)).get("password")
    except psycopg.Error:
        password = None
    if password:
        secrets.add(str(password))
    for secret in sorted(secrets, key=len, reverse=True):
        message = message.replace(secret, "***")
    return message


def connect(url: str, *, autocommit: bool = True, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open one psycopg connection; a wrong DSN raises ``ConfigurationError`` (password redacted)."""
    try:
        return psycopg.connect(driver_url(url), autocommit=autocommit, **kwargs)
    except (psycopg.ProgrammingError, psycopg.OperationalError) as exc:
        error = _connect_error(exc, url)
    # Raised outside the handler: "from None" would still keep the driver's error as
    # __context__, whose message may quote the whole URL, password included.
    raise error


async def connect_async(url: str, *, autocommit: bool = True, **kwargs: Any) -> psycopg.AsyncConnection[Any]:
    """``connect`` for asyncio: one ``psycopg.AsyncConnection``, the same errors."""
    try:
        return await psycopg.AsyncConnection.connect(driver_url(url), autocommit=autocommit, **kwargs)
    except (psycopg.ProgrammingError, psycopg.OperationalError) as exc:
        error = _connect_error(exc, url)
    raise error  # outside the handler, for the reason given in connect()


def _connect_error(exc: psycopg.Error, url: str) -> ConfigurationError:
    if isinstance(exc, psycopg.ProgrammingError):
        return ConfigurationError(
            f"PGQ_DATABASE_URL is not a valid connection string ({redact_url(url)}): {_scrub(str(exc), url)}"
        )
    return ConfigurationError(f"cannot connect to the database at {redact_url(url)}: {_scrub(str(exc).strip(), url)}")


def check_url(url: str) -> None:
    """Raise ``ConfigurationError`` if ``url`` cannot be parsed as a connection string."""
    try:
        psycopg.conninfo.conninfo_to_dict(driver_url(url))
        return
    except psycopg.ProgrammingError as exc:
        error = ConfigurationError(
            f"PGQ_DATABASE_URL is not a valid connection string ({redact_url(url)}): {_scrub(str(exc), url)}"
        )
    raise error  # outside the handler, for the reason given in connect()


class PgqConnection(psycopg.Connection[Any]):
    """A psycopg connection that knows how pgq applies the statement timeout on it.

    ``local_statement_timeout_ms`` > 0 (behind a transaction-mode pooler) makes
    ``execute`` set the timeout for the statement's own transaction, in the same
    round trip; 0 when the session carries it already (a direct connection) or
    there is none.
    """

    local_statement_timeout_ms: int = 0


class PgqAsyncConnection(psycopg.AsyncConnection[Any]):
    """``PgqConnection`` for asyncio (the pool of ``Queue``'s ``*_async`` methods)."""

    local_statement_timeout_ms: int = 0


# The statement timeout for the current transaction only (SET LOCAL cannot take a parameter).
_LOCAL_TIMEOUT = "SELECT set_config('statement_timeout', %s, true)"
_PING = "SELECT 1"


# Connection failures that configuration, not waiting, will fix.
_PERMANENT = re.compile(
    r"does not exist|authentication failed|no pg_hba\.conf entry|permission denied|"
    r"unsupported startup parameter|invalid (?:connection option|sslmode|integer value|port)|password is required",
    re.I,
)


def wait_for_database(
    url: str,
    *,
    timeout_seconds: float,
    clock: Clock | None = None,
    sleep: Callable[[float], None] = time.sleep,
    max_backoff_seconds: float = 5.0,
) -> int:
    """Wait until the database at ``url`` answers a query; return the attempts it took.

    For a process starting while Postgres (or a pooler in front of it) restarts
    or fails over: a connection that is refused, times out, or meets a server
    still starting or shutting down is tried again with backoff (0.1 s doubling
    to ``max_backoff_seconds``) until ``timeout_seconds`` have passed (0: one
    attempt). A failure that waiting cannot fix (a malformed URL, a failed
    login, a database or role that does not exist) raises at once.

    Args:
        url: the database URL (a password in it is never shown).
        timeout_seconds: how long to keep trying, in seconds.
        clock: measures the elapsed time (tests pass a ``ManualClock``).
        sleep: waits between attempts (tests pass one that advances their clock).
    Returns:
        The number of attempts made (1 when the database answered at once).
    Raises:
        ConfigurationError: the URL or the login is wrong.
        DatabaseUnavailable: still unreachable after ``timeout_seconds``.
    """
    check_url(url)
    clock = clock or SystemClock()
    deadline = clock.monotonic() + timeout_seconds
    delay = 0.1
    attempts = 0
    while True:
        attempts += 1
        remaining = deadline - clock.monotonic()
        try:
            # libpq's connect_timeout is whole seconds, at least 2; it bounds a
            # host that drops packets (the OS would wait minutes).
            with psycopg.connect(driver_url(url), autocommit=True, connect_timeout=max(2, min(10, int(remaining) + 1))) as conn:
                conn.execute(_PING, prepare=False)
            return attempts
        except psycopg.Error as exc:
            message = _scrub(str(exc).strip(), url)
            if isinstance(exc, psycopg.ProgrammingError) or _PERMANENT.search(message):
                error: PgqError = ConfigurationError(f"cannot use the database at {redact_url(url)}: {message}")
                break
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                error = DatabaseUnavailable(
                    f"gave up waiting for the database at {redact_url(url)} after {attempts} attempt(s) in "
                    f"{timeout_seconds:g} s (PGQ_START_TIMEOUT_SECONDS): {message}"
                )
                break
            pause = min(delay, remaining)
            log.warning("database at %s not reachable yet (%s); trying again in %.1f s", redact_url(url),
                        message.splitlines()[0] if message else type(exc).__name__, pause)
            sleep(pause)
            delay = min(delay * 2, max_backoff_seconds)
    raise error  # outside the handler: the driver's message may quote the URL (see connect())


_CONNECTION_LOST_STATES = ("57P01", "57P02", "57P03")


def connection_lost(exc: BaseException, conn: psycopg.Connection[Any] | None) -> bool:
    """True when ``exc`` means the connection failed, not that the server refused the statement.

    After such a failure it is unknown whether the server ran the statement.
    """
    if conn is not None and (conn.closed or conn.broken):
        return True
    if isinstance(exc, PoolClosed):  # no connection was taken: nothing was sent
        return False
    if not isinstance(exc, psycopg.OperationalError):
        return False
    sqlstate = exc.sqlstate
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in _CONNECTION_LOST_STATES


def translate(exc: BaseException, url: str | None = None) -> PgqError:
    """Map a driver (or SQLAlchemy-wrapped driver) error to the matching pgq error."""
    orig = getattr(exc, "orig", None)  # sqlalchemy.exc.DBAPIError
    if isinstance(orig, BaseException):
        exc = orig
    if isinstance(exc, PgqError):
        return exc
    if isinstance(exc, PoolTimeout):
        return DatabaseError(f"no database connection available: {exc}")
    if isinstance(exc, PoolClosed):
        return DatabaseError("the queue was closed (Queue.close()) while this call waited for one of its "
                             "connections; nothing was sent")
    sqlstate = getattr(exc, "sqlstate", None)
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) or str(exc).strip()
    if url:
        primary = _scrub(primary, url)
    if sqlstate in _PGQ_CODES:
        return _PGQ_CODES[sqlstate](primary)
    if sqlstate == "57014" and "statement timeout" in primary:
        return StatementTimeout(
            f"{primary} (PGQ_STATEMENT_TIMEOUT_SECONDS); the statement was rolled back"
        )
    if sqlstate == "23505" and getattr(diag, "constraint_name", None) == "jobs_unique_key_idx":
        return DuplicateJob(_unique_key_from(getattr(diag, "message_detail", "") or ""), None)
    if sqlstate in _INPUT_CODES:
        constraint = getattr(diag, "constraint_name", None)
        where = f" (constraint {constraint})" if constraint else ""
        return ValidationError(f"rejected by the database{where}: {primary}")
    if sqlstate == "42501":  # insufficient_privilege
        return DatabaseError(
            f"{primary}; the database role lacks this privilege: grant it the schema's producer or worker "
            "role (README, 'Roles and grants')"
        )
    if isinstance(exc, psycopg.errors.UndefinedFunction | psycopg.errors.UndefinedTable | psycopg.errors.InvalidSchemaName):
        return DatabaseError(f"{primary}; is the schema migrated? run `pgq migrate`")
    return DatabaseError(primary)


def _unique_key_from(detail: str) -> str:
    # "Key (unique_key)=(welcome:42) already exists."
    start, end = detail.find(")=("), detail.rfind(")")
    return detail[start + 3 : end] if start >= 0 and end > start else "?"


@contextlib.contextmanager
def translated(url: str | None = None) -> Iterator[None]:
    """Context manager: driver errors raised inside leave as pgq errors (cause kept)."""
    try:
        yield
    except PgqError:
        raise
    except (psycopg.Error, PoolTimeout) as exc:
        raise translate(exc, url) from exc
    except Exception as exc:
        if getattr(exc, "orig", None) is not None and isinstance(exc.orig, psycopg.Error):  # type: ignore[attr-defined]
            raise translate(exc, url) from exc
        raise


def int_array(values: Iterable[int]) -> str:
    """The Postgres array literal of integers (``'{1,2,3}'``), for a parameter the statement
    casts (``%s::bigint[]``). psycopg dumps a list element by element: for the hundreds of
    ids of a completion batch the literal costs the worker a fifth of the CPU time."""
    return "{" + ",".join(map(str, map(int, values))) + "}"


def _has_rows(cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> bool:
    """Whether the statement just run returned a result with columns (``cur.description``
    says the same, but builds a ``Column`` per field first)."""
    result = cur.pgresult
    return result is not None and result.nfields > 0


def execute(conn: Any, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run ``statement`` on a psycopg connection or a SQLAlchemy connection; return all rows.

    With a SQLAlchemy connection the statement runs through its driver cursor,
    inside whatever transaction the caller has open.
    """
    if isinstance(conn, PgqConnection) and conn.local_statement_timeout_ms:
        # Behind a transaction-mode pooler: the timeout for this statement's own
        # transaction, pipelined with it (one round trip; no Sync in between, so
        # both run in one transaction and the setting ends with it).
        with conn.pipeline():
            conn.execute(_LOCAL_TIMEOUT, [str(conn.local_statement_timeout_ms)])
            cur = conn.execute(statement, params)
        return cur.fetchall() if _has_rows(cur) else []
    if isinstance(conn, psycopg.Connection):
        cur = conn.execute(statement, params)
        return cur.fetchall() if _has_rows(cur) else []
    exec_driver_sql = getattr(conn, "exec_driver_sql", None)
    if exec_driver_sql is None or inspect.iscoroutinefunction(exec_driver_sql):
        raise ValidationError(
            f"connection= must be a SQLAlchemy Connection or a psycopg Connection (an async one goes to the "
            f"*_async calls), got {type(conn).__name__}"
        )
    result = exec_driver_sql(statement, tuple(params))
    return [tuple(row) for row in result.fetchall()] if result.returns_rows else []


async def execute_async(conn: Any, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """``execute`` on a psycopg ``AsyncConnection`` or a SQLAlchemy ``AsyncConnection``."""
    if isinstance(conn, PgqAsyncConnection) and conn.local_statement_timeout_ms:
        async with conn.pipeline():  # as in execute(): one round trip, one transaction
            await conn.execute(_LOCAL_TIMEOUT, [str(conn.local_statement_timeout_ms)])
            cur = await conn.execute(statement, params)
        return await cur.fetchall() if _has_rows(cur) else []
    if isinstance(conn, psycopg.AsyncConnection):
        cur = await conn.execute(statement, params)
        return await cur.fetchall() if _has_rows(cur) else []
    exec_driver_sql = getattr(conn, "exec_driver_sql", None)
    if exec_driver_sql is None or not inspect.iscoroutinefunction(exec_driver_sql):
        raise ValidationError(
            "connection= of an *_async call must be a SQLAlchemy AsyncConnection or a psycopg AsyncConnection, "
            f"got {type(conn).__name__}"
        )
    result = await exec_driver_sql(statement, tuple(params))
    return [tuple(row) for row in result.fetchall()] if result.returns_rows else []
