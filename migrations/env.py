"""Alembic environment for pgq.

The URL and the schema come from pgq's Settings (or from the attributes that
`pgq migrate` passes in); the version table lives in the pgq schema, so two pgq
schemas in one database keep separate histories.
"""

from alembic import context
from sqlalchemy import create_engine, pool, text

from pgq.migrate import configured_schema, configured_url
from pgq.db import quote_ident

config = context.config
schema = configured_schema(config)


def run_migrations_offline() -> None:
    context.configure(
        # Offline SQL needs only the dialect. The configured URL is not parsed
        # (SQLAlchemy's parser fails on some valid libpq strings, and its
        # errors would quote the URL, password included).
        url="postgresql+psycopg://",
        literal_binds=True,
        version_table_schema=schema,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is None:
        engine = create_engine(configured_url(config), poolclass=pool.NullPool)
        with engine.connect() as connection:
            _run(connection)
        engine.dispose()
    else:
        _run(connectable)


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    # The version table lives in the schema, so the schema must exist before
    # alembic reads it.
    connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}"))
    connection.commit()
    context.configure(connection=connection, version_table_schema=schema, transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
