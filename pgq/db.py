"""Connections to Postgres and the translation of driver errors into pgq errors.

Runtime connections are psycopg 3 connections in autocommit mode: every pgq
operation is one stored-function call, hence one statement, one transaction
and one round trip. Pools are bounded (``Settings.pool_size``). A caller's
SQLAlchemy connection is also accepted wherever a transactional enqueue makes
sense; its driver-level cursor runs the same SQL inside the caller's
transaction. Queue semantics live elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from pgq.errors import (
    ConfigurationError,
    DatabaseError,
    DuplicateJob,
    InvalidTransition,
    JobNotFound,
    PgqError,
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
    except psycopg.ProgrammingError as exc:
        error = ConfigurationError(
            f"PGQ_DATABASE_URL is not a valid connection string ({redact_url(url)}): {_scrub(str(exc), url)}"
        )
    except psycopg.OperationalError as exc:
        error = ConfigurationError(
            f"cannot connect to the database at {redact_url(url)}: {_scrub(str(exc).strip(), url)}"
        )
    # Raised outside the handler: "from None" would still keep the driver's error as
    # __context__, whose message may quote the whole URL, password included.
    raise error


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


def make_pool(url: str, *, max_size: int, name: str = "pgq", min_size: int = 1) -> ConnectionPool:
    """Create (and open) a bounded pool of autocommit connections to ``url``."""
    check_url(url)
    pool = ConnectionPool(
        driver_url(url),
        min_size=min(min_size, max_size),
        max_size=max_size,
        kwargs={"autocommit": True},
        name=name,
        open=False,
        timeout=30.0,
        reconnect_timeout=60.0,
    )
    # Fail fast with a clear message when the database cannot be reached at all.
    probe = connect(url)
    probe.close()
    pool.open()
    return pool


def translate(exc: BaseException, url: str | None = None) -> PgqError:
    """Map a driver (or SQLAlchemy-wrapped driver) error to the matching pgq error."""
    orig = getattr(exc, "orig", None)  # sqlalchemy.exc.DBAPIError
    if isinstance(orig, BaseException):
        exc = orig
    if isinstance(exc, PgqError):
        return exc
    if isinstance(exc, PoolTimeout):
        return DatabaseError(f"no database connection available: {exc}")
    sqlstate = getattr(exc, "sqlstate", None)
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) or str(exc).strip()
    if url:
        primary = _scrub(primary, url)
    if sqlstate in _PGQ_CODES:
        return _PGQ_CODES[sqlstate](primary)
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


def execute(conn: Any, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run ``statement`` on a psycopg connection or a SQLAlchemy connection; return all rows.

    With a SQLAlchemy connection the statement runs through its driver cursor,
    inside whatever transaction the caller has open.
    """
    if isinstance(conn, psycopg.Connection):
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []
    exec_driver_sql = getattr(conn, "exec_driver_sql", None)
    if exec_driver_sql is None:
        raise ValidationError(
            f"connection= must be a SQLAlchemy Connection or a psycopg Connection, got {type(conn).__name__}"
        )
    result = exec_driver_sql(statement, tuple(params))
    return [tuple(row) for row in result.fetchall()] if result.returns_rows else []
