"""Schema migrations: Alembic driven from code, and helpers for the revisions.

``upgrade`` / ``downgrade`` / ``current_revision`` / ``check`` build an Alembic
configuration from ``Settings`` (script location inside the installed package,
URL and schema from settings), so ``pgq migrate`` needs no alembic.ini.
Revisions call ``enter_schema()`` and ``run_sql_file()``. ``drop_roles``
removes the cluster-wide roles a schema's migrations created, once nothing
uses them.
"""

from __future__ import annotations

import io
import logging
import sys
from typing import Any, TextIO

import psycopg
import psycopg.errors
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Engine

from pgq import sqlfiles
from pgq.db import connect, driver_url, quote_ident, translated
from pgq.errors import PgqError
from pgq.settings import Settings, validate_schema_name

log = logging.getLogger("pgq.migrate")

# ---------------------------------------------------------------- for revisions


def schema_ident() -> str:
    """The configured schema, quoted, for use inside a revision."""
    from alembic import context

    return quote_ident(configured_schema(context.config))


def enter_schema() -> None:
    """Point this transaction's search_path at the pgq schema.

    Functions are created with ``SET search_path FROM CURRENT``, so they keep
    this path (schema, then pg_catalog, then pg_temp last so that temporary
    objects can never shadow pgq's).
    """
    from alembic import op

    op.execute(f"SET LOCAL search_path TO {schema_ident()}, pg_catalog, pg_temp")


def run_sql_file(relative: str) -> None:
    """Execute ``db/<relative>`` exactly as written."""
    from alembic import op

    op.execute(sqlfiles.read_sql(relative))


# ---------------------------------------------------------------- for env.py


def configured_schema(config: Config) -> str:
    schema = config.attributes.get("pgq_schema") or Settings.from_env().schema
    return validate_schema_name(schema)


def configured_url(config: Config, *, required: bool = True) -> str | None:
    url = config.attributes.get("pgq_url") or Settings.from_env().database_url
    if url is None and required:
        Settings().require_database_url()
    return url


# ---------------------------------------------------------------- for pgq


def alembic_config(settings: Settings, *, stdout: TextIO | None = None, url_required: bool = True) -> Config:
    url = settings.require_database_url() if url_required else settings.database_url
    # Offline (--sql) mode writes the SQL to output_buffer, not to stdout; without
    # it Alembic falls back to sys.stdout and upgrade_sql() would return "".
    cfg = Config(stdout=stdout or sys.stdout, output_buffer=stdout)
    cfg.set_main_option("script_location", str(sqlfiles.migrations_dir()))
    cfg.attributes["pgq_schema"] = settings.schema
    cfg.attributes["pgq_url"] = url
    return cfg


def _log_warning(diag: psycopg.errors.Diagnostic) -> None:
    # A revision that cannot do everything says so with RAISE WARNING (e.g. 0003
    # when the migrating role may not create roles); psycopg drops notices
    # unless someone listens.
    if diag.severity_nonlocalized == "WARNING":
        log.warning("%s", diag.message_primary)


def _connect_for_migrations(url: str) -> psycopg.Connection[Any]:
    conn = connect(url, autocommit=False)
    conn.add_notice_handler(_log_warning)
    return conn


def _engine(url: str) -> Engine:
    # A creator callable accepts every libpq connection string form (URL or
    # key=value) and gives pgq's clear error for a wrong DSN.
    return create_engine(
        "postgresql+psycopg://",
        creator=lambda: _connect_for_migrations(url),
        poolclass=pool.NullPool,
    )


def head_revision() -> str:
    """The newest revision this pgq ships."""
    script = ScriptDirectory(str(sqlfiles.migrations_dir()))
    head = script.get_current_head()
    assert head is not None
    return head


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Migrate the database up to ``revision`` (commits)."""
    _run(settings, command.upgrade, revision)


def downgrade(settings: Settings, revision: str) -> None:
    """Migrate the database down to ``revision`` (``base`` removes every pgq object but the schema)."""
    _run(settings, command.downgrade, revision)


def upgrade_sql(settings: Settings, revision: str = "head") -> str:
    """Return the SQL that ``upgrade`` would run (offline mode); touches no database."""
    out = io.StringIO()
    cfg = alembic_config(settings, stdout=out, url_required=False)
    command.upgrade(cfg, revision, sql=True)
    return out.getvalue()


def _run(settings: Settings, action: Any, revision: str) -> None:
    url = settings.require_database_url()
    engine = _engine(url)
    try:
        with translated(url), engine.connect() as connection:
            cfg = alembic_config(settings)
            cfg.attributes["connection"] = connection
            action(cfg, revision)
            connection.commit()
    finally:
        engine.dispose()


def current_revision(settings: Settings) -> str | None:
    """The revision the database is at, or None when pgq was never migrated there."""
    from pgq.queries import Queries

    url = settings.require_database_url()
    with translated(url), connect(url) as conn:
        return Queries(settings.schema).schema_revision(conn)


# The first revision whose objects are granted to the roles (db/roles/001.sql).
ROLES_REVISION = "0003"
# Statements of drop_roles: administration, not runtime (pgq/queries/ holds those).
_EXISTING_ROLES = "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY (%s::text[]) ORDER BY rolname"
_MEMBERS = (
    "SELECT r.rolname, m.rolname FROM pg_catalog.pg_auth_members AS a"
    " JOIN pg_catalog.pg_roles AS r ON r.oid = a.roleid JOIN pg_catalog.pg_roles AS m ON m.oid = a.member"
    " WHERE r.rolname = ANY (%s::text[]) ORDER BY 1, 2"
)


def role_names(schema: str) -> list[str]:
    """The roles the revisions create for ``schema``: ``<schema>_producer`` and ``<schema>_worker``
    (0003), ``<schema>_viewer`` and ``<schema>_operator`` (0015, the dashboard)."""
    return [f"{schema}_producer", f"{schema}_worker", f"{schema}_viewer", f"{schema}_operator"]


def drop_roles(settings: Settings) -> tuple[list[str], list[tuple[str, str]]]:
    """Drop the schema's roles (``<schema>_producer``, ``_worker``, ``_viewer``, ``_operator``) once nothing uses them.

    Roles are cluster-wide, so they outlive a schema dropped by hand or a
    database dropped whole. Refused, changing nothing, while this database's
    schema is still migrated to a revision that grants them, and while any
    database still grants them a privilege or they own anything (Postgres then
    names what, and where). Memberships (``GRANT pgq_producer TO app_web``) go
    with the roles; they are returned so that the caller can say so. One
    transaction: every role goes, or none.

    Returns:
        The roles dropped (those that existed) and the memberships removed, as
        ``(role, member)`` pairs.
    Raises:
        PgqError: refused (the message says why and what to do first).
    """
    from pgq.queries import Queries

    url = settings.require_database_url()
    names = role_names(settings.schema)
    with translated(url), connect(url, autocommit=False) as conn:
        current = Queries(settings.schema).schema_revision(conn)
        if current is not None and current >= ROLES_REVISION:
            raise PgqError(
                f"schema {settings.schema!r} in this database is at revision {current} and grants {' and '.join(names)} "
                f"its functions: remove it first (`pgq migrate --downgrade --to base`; the downgrade drops the roles "
                "itself when no other database uses them), then run --drop-roles for what is left"
            )
        existing = [str(r[0]) for r in conn.execute(_EXISTING_ROLES, [names]).fetchall()]
        members = [(str(r[0]), str(r[1])) for r in conn.execute(_MEMBERS, [names]).fetchall()]
        try:
            for name in existing:
                conn.execute(psycopg.sql.SQL("DROP ROLE {}").format(psycopg.sql.Identifier(name)))
        except psycopg.errors.DependentObjectsStillExist as exc:
            conn.rollback()
            detail = (exc.diag.message_detail or "").replace("\n", "; ")
            error = PgqError(
                f"{exc.diag.message_primary}: {detail}. Nothing was dropped. In each database named, revoke "
                f"those privileges (or run `pgq migrate --downgrade --to base` there, or "
                f"`REASSIGN OWNED BY ... TO ...; DROP OWNED BY ...` for {' and '.join(names)}), then try again"
            )
        except psycopg.errors.InsufficientPrivilege as exc:
            conn.rollback()
            error = PgqError(f"{exc.diag.message_primary}: dropping roles needs CREATEROLE (or a superuser). "
                             "Nothing was dropped")
        else:
            conn.commit()
            return existing, members
    raise error


def ensure_current(conn: psycopg.Connection[Any], schema: str) -> None:
    """Raise ``SchemaNotReady`` unless the schema is at this pgq's head revision."""
    from pgq.queries import ensure_current as check

    check(conn, schema)


__all__ = [
    "current_revision",
    "downgrade",
    "drop_roles",
    "driver_url",
    "ensure_current",
    "head_revision",
    "upgrade",
    "upgrade_sql",
]
