"""Issue 9, defect 9: newcomer friction.

``pgq.connect(..., redis_url=None)`` switches Redis off whatever
``PGQ_REDIS_URL`` says; a guessed parameter name (``url=``) names the right
one; ``pgq migrate --drop-roles`` removes the cluster-wide roles a schema left
behind, and refuses, changing nothing, while anything still uses them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

import pgq
from pgq.cli import main

pytestmark = pytest.mark.integration


def test_an_explicit_redis_url_none_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    monkeypatch.setenv("PGQ_REDIS_URL", "redis://127.0.0.1:6379/0")
    assert pgq.connect(db_url).settings.redis_url == "redis://127.0.0.1:6379/0"  # not given: the environment
    q = pgq.connect(db_url, redis_url=None)
    assert q.settings.redis_url is None and q.redis is None
    monkeypatch.setenv("PGQ_LISTEN_DATABASE_URL", db_url)
    assert pgq.connect(db_url, listen_database_url=None).settings.listen_database_url is None
    # database_url=None still means "from the environment" (there is no "off" for it).
    monkeypatch.setenv("PGQ_DATABASE_URL", db_url)
    assert pgq.connect(None).settings.database_url == db_url


def test_a_guessed_parameter_name_points_to_the_real_one(db_url: str) -> None:
    with pytest.raises(pgq.ConfigurationError, match=r"url \(did you mean database_url\?\)"):
        pgq.connect(url=db_url)


# ---------------------------------------------------------------- migrate --drop-roles


@pytest.fixture
def schema(conn: psycopg.Connection[Any]) -> Iterator[str]:
    """A schema of its own (its roles are cluster-wide: no other test may share them)."""
    name = f"pgq_dr{os.getpid()}"
    yield name
    for role in (f"{name}_producer", f"{name}_worker", f"{name}_viewer", f"{name}_operator"):
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
        if exists:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    conn.execute("DROP ROLE IF EXISTS pgq_dr_login")


def all_roles(schema: str) -> list[str]:
    """Every role a schema's migrations create, in name order."""
    return [f"{schema}_operator", f"{schema}_producer", f"{schema}_viewer", f"{schema}_worker"]


def _roles(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    rows = conn.execute("SELECT rolname FROM pg_roles WHERE rolname IN (%s, %s, %s, %s) ORDER BY 1",
                        [f"{schema}_producer", f"{schema}_worker", f"{schema}_viewer", f"{schema}_operator"]).fetchall()
    return [str(r[0]) for r in rows]


def test_drop_roles_refuses_while_the_schema_is_migrated_then_drops_what_is_left(
    schema: str, db_url: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGQ_DATABASE_URL", db_url)
    runner = CliRunner()
    assert runner.invoke(main, ["--schema", schema, "migrate"]).exit_code == 0
    assert _roles(conn, schema) == all_roles(schema)
    conn.execute(sql.SQL("CREATE ROLE pgq_dr_login; GRANT {} TO pgq_dr_login").format(
        sql.Identifier(f"{schema}_producer")))

    refused = runner.invoke(main, ["--schema", schema, "migrate", "--drop-roles"])
    assert refused.exit_code == 1, refused.output
    assert "--downgrade --to base" in refused.output
    assert _roles(conn, schema) == all_roles(schema)

    # Dropped by hand, the schema leaves its roles behind (they are cluster-wide).
    conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    assert _roles(conn, schema) == all_roles(schema)
    dropped = runner.invoke(main, ["--schema", schema, "migrate", "--drop-roles"])
    assert dropped.exit_code == 0, dropped.output
    assert f"dropped {', '.join(all_roles(schema))}" in dropped.output
    assert f"pgq_dr_login is no longer a member of {schema}_producer" in dropped.output
    assert _roles(conn, schema) == []
    again = runner.invoke(main, ["--schema", schema, "migrate", "--drop-roles"])
    assert again.exit_code == 0 and "no role to drop" in again.output


def test_drop_roles_refuses_and_changes_nothing_while_a_privilege_still_uses_a_role(
    schema: str, db_url: str, conn: psycopg.Connection[Any], connect: Callable[..., psycopg.Connection[Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGQ_DATABASE_URL", db_url)
    runner = CliRunner()
    assert runner.invoke(main, ["--schema", schema, "migrate"]).exit_code == 0
    conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    # Something else in this database still grants the worker role a privilege.
    conn.execute("CREATE TABLE app_table (x int)")
    conn.execute(sql.SQL("GRANT SELECT ON app_table TO {}").format(sql.Identifier(f"{schema}_worker")))
    refused = runner.invoke(main, ["--schema", schema, "migrate", "--drop-roles"])
    assert refused.exit_code == 1, refused.output
    assert "Nothing was dropped" in refused.output and "app_table" in refused.output
    # One transaction: the producer role (droppable on its own) is still there too.
    assert _roles(conn, schema) == all_roles(schema)


def test_migrate_downgrade_to_base_removes_the_schema_objects_and_the_roles(
    schema: str, db_url: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGQ_DATABASE_URL", db_url)
    runner = CliRunner()
    assert runner.invoke(main, ["--schema", schema, "migrate"]).exit_code == 0
    result = runner.invoke(main, ["--schema", schema, "migrate", "--downgrade", "--to", "base", "--yes"])
    assert result.exit_code == 0, result.output
    assert conn.execute("SELECT to_regclass(%s)", [f"{schema}.jobs"]).fetchone() == (None,)
    assert _roles(conn, schema) == []
    usage = runner.invoke(main, ["--schema", schema, "migrate", "--downgrade"])
    assert usage.exit_code == 2 and "--to" in usage.output
