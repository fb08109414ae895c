"""Migrations: the schema they build is db/schema.sql, round trips, offline SQL, other schemas,
and agreement with pgq/schema.py and pgq/job.py."""

from __future__ import annotations

import difflib
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

import factories
from pgq import schema as pgq_schema
from pgq.errors import ConfigurationError, SchemaNotReady
from pgq.job import JobStatus
from pgq.migrate import current_revision, downgrade, ensure_current, head_revision, upgrade, upgrade_sql
from support.schema_dump import dump, main as schema_dump_main
from pgq.settings import Settings
from pgq.sqlfiles import sql_dir

pytestmark = pytest.mark.integration

SCHEMA_SQL = sql_dir() / "schema.sql"
REGENERATE = ("regenerate it from a database migrated to head:\n"
              "  python tests/support/schema_dump.py --url postgresql://USER@HOST/DB > db/schema.sql\n"
              "and review the diff: it is the change your migration makes to the schema.")


def dump_of(url: str, schema: str = "pgq") -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        return dump(conn, schema)


def assert_same_text(actual: str, expected: str, what: str) -> None:
    if actual != expected:
        diff = "".join(difflib.unified_diff(
            expected.splitlines(keepends=True), actual.splitlines(keepends=True),
            fromfile=f"expected ({what})", tofile="migrated database", n=2))
        pytest.fail(f"{what} differs from the migrated database:\n{diff}\n{REGENERATE}", pytrace=False)


# ---------------------------------------------------------------- (a), (b) schema.sql and round trip


def test_upgrading_an_empty_database_produces_exactly_db_schema_sql(empty_db_url):
    upgrade(Settings(database_url=empty_db_url))

    assert_same_text(dump_of(empty_db_url), SCHEMA_SQL.read_text(encoding="utf-8"), "db/schema.sql")


def test_downgrade_to_base_then_upgrade_to_head_gives_the_same_schema(empty_db_url):
    settings = Settings(database_url=empty_db_url)
    upgrade(settings)
    at_head = dump_of(empty_db_url)

    downgrade(settings, "base")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        left = conn.execute(
            "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'pgq' AND c.relkind IN ('r', 'v', 'S') ORDER BY 1").fetchall()
        functions = conn.execute("SELECT count(*) FROM pg_proc AS p JOIN pg_namespace AS n"
                                 " ON n.oid = p.pronamespace WHERE n.nspname = 'pgq'").fetchone()
        types = conn.execute("SELECT count(*) FROM pg_type AS t JOIN pg_namespace AS n ON n.oid = t.typnamespace"
                             " WHERE n.nspname = 'pgq' AND t.typtype = 'e'").fetchone()
    assert left == [("alembic_version",)]  # base keeps only the (empty) version table and the schema
    assert (functions, types) == ((0,), (0,))
    assert current_revision(settings) is None

    upgrade(settings)
    assert_same_text(dump_of(empty_db_url), at_head, "the schema before the round trip")


def test_downgrade_from_head_to_0004_gives_the_0004_schema(empty_db_url):
    settings = Settings(database_url=empty_db_url)
    upgrade(settings, "0004")
    at_0004 = dump_of(empty_db_url)
    upgrade(settings)
    downgrade(settings, "0004")

    assert_same_text(dump_of(empty_db_url), at_0004, "the schema at revision 0004")


def test_revision_0005_numbers_the_lives_of_jobs_requeued_before_it(empty_db_url):
    """Executions written before 0005 get the life their start falls in (from the dead letters)."""
    settings = Settings(database_url=empty_db_url, heartbeat_interval_seconds=1, stale_after_seconds=2)
    upgrade(settings, "0004")
    worker = "11111111-1111-1111-1111-111111111111"
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("SELECT pgq.register_worker(%s, 'h', 1, '{default}')", (worker,))
        twice = conn.execute("SELECT pgq.enqueue_job('t', p_max_attempts => 1)").fetchone()[0]
        once = conn.execute("SELECT pgq.enqueue_job('t', p_max_attempts => 2)").fetchone()[0]
        never = conn.execute("SELECT pgq.enqueue_job('t', p_max_attempts => 1)").fetchone()[0]
        for _ in range(2):  # twice: dead, requeued, dead, requeued, then claimed (running)
            conn.execute("SELECT * FROM pgq.get_runnable_jobs('{default}', %s, 10)", (worker,))
            for job_id, attempts in conn.execute(
                    "SELECT id, attempts FROM pgq.jobs WHERE status = 'running' ORDER BY id").fetchall():
                conn.execute("SELECT pgq.fail_job(%s, %s, %s, 'E', 'x', p_retry_delay => 0)",
                             (job_id, worker, attempts))
            conn.execute("SELECT * FROM pgq.requeue_dead_jobs(%s)", ([twice],))
        conn.execute("SELECT * FROM pgq.get_runnable_jobs('{default}', %s, 10)", (worker,))

    upgrade(settings)

    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        lives = dict(conn.execute("SELECT id, life FROM pgq.jobs").fetchall())
        history = conn.execute("SELECT job_id, life, attempt, outcome FROM pgq.job_history"
                               " ORDER BY job_id, life, attempt").fetchall()
    assert lives == {twice: 3, once: 1, never: 1}
    assert [h for h in history if h[0] == twice] == [
        (twice, 1, 1, "failed"), (twice, 2, 1, "failed"), (twice, 3, 1, "running")]
    assert [h[1:] for h in history if h[0] == once] == [(1, 1, "failed"), (1, 2, "failed")]


def test_schema_at_each_revision_round_trips(empty_db_url):
    settings = Settings(database_url=empty_db_url)
    upgrade(settings, "0001")
    at_0001 = dump_of(empty_db_url)
    upgrade(settings)
    downgrade(settings, "0001")

    assert_same_text(dump_of(empty_db_url), at_0001, "the schema at revision 0001")


def test_database_is_at_head_after_upgrade_and_not_before(empty_db_url, settings):
    fresh = Settings(database_url=empty_db_url)
    assert current_revision(fresh) is None
    with psycopg.connect(empty_db_url, autocommit=True) as conn, pytest.raises(SchemaNotReady, match="pgq migrate"):
        ensure_current(conn, "pgq")

    assert current_revision(settings) == head_revision()
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        ensure_current(conn, "pgq")


def test_schema_dump_command_prints_the_dump(db_url, capsys):
    assert schema_dump_main(["--url", db_url]) == 0
    assert capsys.readouterr().out == dump_of(db_url)


def test_schema_dump_command_reports_a_missing_schema(db_url, capsys):
    assert schema_dump_main(["--url", db_url, "--schema", "not_there"]) == 1
    assert "not_there" in capsys.readouterr().err


# ---------------------------------------------------------------- (c) offline SQL


@pytest.mark.parametrize("database_url", [None, "postgresql://nobody@127.0.0.1:1/nowhere"])
def test_offline_upgrade_sql_contains_the_ddl_and_needs_no_database(database_url):
    text = upgrade_sql(Settings(database_url=database_url))

    for expected in (
        'CREATE SCHEMA IF NOT EXISTS "pgq"',
        'SET LOCAL search_path TO "pgq", pg_catalog, pg_temp',
        "CREATE TYPE job_status AS ENUM",
        "CREATE TABLE jobs (",
        "CREATE TABLE workers (",
        "CREATE TABLE job_executions (",
        "CREATE TABLE dead_letter_queue (",
        "CREATE TABLE job_dependencies (",
        "CREATE TABLE worker_health_logs (",
        "CREATE TABLE state_snapshots (",
        "CREATE INDEX jobs_claim_idx",
        "CREATE OR REPLACE FUNCTION get_runnable_jobs(",
        "CREATE OR REPLACE FUNCTION mark_stale_workers(",
        "CREATE OR REPLACE TRIGGER jobs_notify_job_available",
        "CREATE OR REPLACE VIEW queue_stats AS",
        f"UPDATE pgq.alembic_version SET version_num='{head_revision()}'",
    ):
        assert expected in text, expected
    assert text.index("CREATE TABLE jobs (") < text.index("CREATE OR REPLACE FUNCTION get_runnable_jobs(")


def test_offline_upgrade_sql_for_another_schema_names_that_schema():
    text = upgrade_sql(Settings(schema="pgq_alt"))

    assert 'CREATE SCHEMA IF NOT EXISTS "pgq_alt"' in text
    assert 'SET LOCAL search_path TO "pgq_alt", pg_catalog, pg_temp' in text
    assert "UPDATE pgq_alt.alembic_version" in text
    # Only the comments copied from db/ files (examples for DBAs) say "pgq".
    assert '"pgq"' not in text and "pgq.alembic_version" not in text


# ---------------------------------------------------------------- (d) another schema


def test_a_second_schema_migrates_beside_the_first_and_works(db_url, conn):
    alt = Settings(database_url=db_url, schema="pgq_alt")
    listener = psycopg.connect(db_url, autocommit=True)
    try:
        listener.execute("LISTEN pgq_alt_job_available")
        listener.execute("LISTEN pgq_job_available")

        upgrade(alt)

        assert current_revision(alt) == head_revision()
        job_id = conn.execute("SELECT pgq_alt.enqueue_job('send', '{\"n\": 1}', 'emails')").fetchone()[0]
        notes = factories.drain_notifications(listener, conn)
        worker_id = factories.insert_worker(conn, schema="pgq_alt", queues=["emails"])
        claimed = conn.execute("SELECT id, payload, status::text FROM pgq_alt.get_runnable_jobs('{emails}', %s, 5)",
                               (worker_id,)).fetchall()
    finally:
        listener.close()

    assert notes == [("pgq_alt_job_available", "emails")]
    assert claimed == [(job_id, {"n": 1}, "running")]
    assert factories.table_counts(conn, schema="pgq")["jobs"] == 0  # the schemas do not share rows
    # The functions keep their own schema whatever the caller's search_path.
    conn.execute("SET search_path TO pgq")
    assert conn.execute("SELECT count(*) FROM pgq_alt.complete_jobs(%s, %s, '{1}')",
                        (worker_id, [job_id])).fetchone() == (1,)
    assert factories.job(conn, job_id, schema="pgq_alt")["status"] == "completed"


def test_dump_of_another_schema_is_the_default_dump_with_the_name_replaced(empty_db_url):
    upgrade(Settings(database_url=empty_db_url, schema="pgq_alt"))

    assert_same_text(dump_of(empty_db_url, "pgq_alt").replace("pgq_alt", "pgq"),
                     SCHEMA_SQL.read_text(encoding="utf-8"), "db/schema.sql (schema renamed)")


@pytest.mark.parametrize("name", ["Pgq", "pgq-alt", "1pgq", "pgq; DROP TABLE x", "", "a" * 41])
def test_an_invalid_schema_name_is_a_configuration_error(name):
    # Rejected before any connection is made (the URL points nowhere).
    with pytest.raises(ConfigurationError, match="PGQ_SCHEMA"):
        upgrade(Settings(database_url="postgresql://nobody@127.0.0.1:1/nowhere", schema=name))
    with pytest.raises(ConfigurationError, match="PGQ_SCHEMA"):
        upgrade_sql(Settings(schema=name))


# ---------------------------------------------------------------- (e) pgq/schema.py


def _reflect(url: str) -> sa.MetaData:
    engine = sa.create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(url),
                              poolclass=sa.pool.NullPool)
    try:
        reflected = sa.MetaData()
        reflected.reflect(engine, schema="pgq", views=False)
        return reflected
    finally:
        engine.dispose()


def _type_name(column: sa.Column[Any]) -> str:
    return str(column.type.compile(dialect=postgresql.dialect())).lower()


def test_schema_py_matches_the_migrated_tables(db_url):
    reflected = _reflect(db_url)
    tables = {t.name: t for t in reflected.tables.values() if t.name != "alembic_version"}

    assert set(tables) == {t.name for t in pgq_schema.TABLES}
    for declared in pgq_schema.TABLES:
        actual = tables[declared.name]
        assert [c.name for c in declared.columns] == [c.name for c in actual.columns], declared.name
        for mine, theirs in zip(declared.columns, actual.columns, strict=True):
            where = f"{declared.name}.{mine.name}"
            assert mine.nullable == theirs.nullable, where
            assert _type_name(mine) == _type_name(theirs), where
            assert (mine.server_default is None and mine.computed is None and mine.identity is None) == (
                theirs.server_default is None and theirs.computed is None and theirs.identity is None), where
        assert [c.name for c in declared.primary_key] == [c.name for c in actual.primary_key], declared.name
        assert declared.primary_key.name == actual.primary_key.name, declared.name
        assert {(fk.constraint.name, fk.parent.name, fk.column.table.name, fk.column.name, fk.ondelete)
                for fk in declared.foreign_keys} == {
            (fk.constraint.name, fk.parent.name, fk.column.table.name, fk.column.name, fk.ondelete)
            for fk in actual.foreign_keys}, declared.name
        checks = {c.name for c in declared.constraints if isinstance(c, sa.CheckConstraint)}
        assert checks == {c.name for c in actual.constraints if isinstance(c, sa.CheckConstraint)}, declared.name
        assert {(i.name, i.unique, tuple(c.name for c in i.columns)) for i in declared.indexes} == {
            (i.name, bool(i.unique), tuple(c.name for c in i.columns)) for i in actual.indexes}, declared.name
        assert declared.comment == actual.comment, declared.name


def test_schema_py_enums_match_the_database(conn):
    for enum in (pgq_schema.job_status, pgq_schema.worker_status_enum, pgq_schema.attempt_outcome):
        labels = conn.execute(
            "SELECT array_agg(e.enumlabel::text ORDER BY e.enumsortorder) FROM pg_enum AS e"
            " WHERE e.enumtypid = to_regtype(%s)", (f"pgq.{enum.name}",)).fetchone()[0]
        assert labels == list(enum.enums), enum.name


def test_schema_py_reads_work_in_another_schema(db_url, conn):
    upgrade(Settings(database_url=db_url, schema="pgq_alt"))
    job_id = conn.execute("SELECT pgq_alt.enqueue_job('t')").fetchone()[0]
    engine = sa.create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(db_url),
                              poolclass=sa.pool.NullPool)
    try:
        with engine.connect().execution_options(
                schema_translate_map=pgq_schema.schema_translate_map("pgq_alt")) as sa_conn:
            rows = sa_conn.execute(sa.select(pgq_schema.jobs.c.id, pgq_schema.jobs.c.status)).all()
    finally:
        engine.dispose()
    assert rows == [(job_id, "queued")]


# ---------------------------------------------------------------- (f) JobStatus


def test_sql_job_status_enum_has_exactly_the_values_of_jobstatus(conn):
    labels = conn.execute("SELECT enum_range(NULL::pgq.job_status)::text[]").fetchone()[0]
    assert labels == [s.value for s in JobStatus]


# ---------------------------------------------------------------- (g) comments


def test_every_table_column_view_and_type_has_a_comment(conn):
    missing = conn.execute("""
        SELECT c.relname || coalesce('.' || a.attname, '')
        FROM pg_class AS c
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        LEFT JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                                    AND c.relkind = 'r'
        WHERE n.nspname = 'pgq' AND c.relkind IN ('r', 'v') AND c.relname <> 'alembic_version'
          AND (CASE WHEN a.attname IS NULL THEN obj_description(c.oid, 'pg_class')
                    ELSE col_description(c.oid, a.attnum) END) IS NULL
        UNION ALL
        SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'pgq' AND c.relkind IN ('r', 'v') AND c.relname <> 'alembic_version'
          AND obj_description(c.oid, 'pg_class') IS NULL
        UNION ALL
        SELECT t.typname FROM pg_type AS t JOIN pg_namespace AS n ON n.oid = t.typnamespace
        WHERE n.nspname = 'pgq' AND t.typtype = 'e' AND obj_description(t.oid, 'pg_type') IS NULL
        ORDER BY 1
    """).fetchall()
    assert missing == []


def test_every_function_and_view_has_a_comment(conn):
    # A DBA reads what a function does with \df+ pgq.* or obj_description() (issue 9).
    missing = {r[0] for r in conn.execute("""
        SELECT p.proname FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
        WHERE n.nspname = 'pgq' AND obj_description(p.oid, 'pg_proc') IS NULL
        UNION ALL
        SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'pgq' AND c.relkind = 'v' AND obj_description(c.oid, 'pg_class') IS NULL
    """).fetchall()}
    assert missing == set()


def test_every_index_is_in_schema_py_or_backs_a_constraint(conn):
    # The reason for each index is written next to it in migration 0001; here we
    # only make sure none exists that pgq/schema.py does not know about.
    names = {r[0] for r in conn.execute(
        "SELECT i.relname FROM pg_index AS x JOIN pg_class AS i ON i.oid = x.indexrelid"
        " JOIN pg_class AS t ON t.oid = x.indrelid JOIN pg_namespace AS n ON n.oid = t.relnamespace"
        " WHERE n.nspname = 'pgq' AND t.relname <> 'alembic_version'"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conindid = x.indexrelid)").fetchall()}
    assert names == {i.name for t in pgq_schema.TABLES for i in t.indexes}


def test_template_clone_is_private_to_the_test(conn, db_url):
    # The fixture contract the other tests rely on: a fresh, migrated, empty database.
    assert factories.table_counts(conn) == dict.fromkeys(factories.TABLES, 0)
    name = conn.execute("SELECT current_database()").fetchone()[0]
    assert name in db_url
