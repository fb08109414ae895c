"""The pgq command without a database: parsing, offline SQL, configuration errors."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pgq.cli import main


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in ("PGQ_DATABASE_URL", "PGQ_SCHEMA"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


def test_help_lists_every_command(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("migrate", "worker", "status", "workers", "dlq", "bench"):
        assert command in result.output


@pytest.mark.parametrize("args", [["status"], ["workers"], ["dlq", "list"], ["migrate"], ["migrate", "--check"]])
def test_commands_without_database_say_how_to_configure_it(runner: CliRunner, args: list[str]) -> None:
    result = runner.invoke(main, args)
    assert result.exit_code == 2
    assert "PGQ_DATABASE_URL" in result.output


def test_migrate_sql_prints_ddl_without_a_database(runner: CliRunner) -> None:
    result = runner.invoke(main, ["migrate", "--sql"])
    assert result.exit_code == 0, result.output
    assert "CREATE TABLE jobs" in result.output
    assert "CREATE OR REPLACE FUNCTION get_runnable_jobs" in result.output
    assert 'CREATE SCHEMA IF NOT EXISTS "pgq"' in result.output or "CREATE SCHEMA IF NOT EXISTS pgq" in result.output


def test_migrate_sql_honours_the_schema_option(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--schema", "jobs_alt", "migrate", "--sql"])
    assert result.exit_code == 0, result.output
    assert "jobs_alt" in result.output
    assert "search_path TO jobs_alt" in result.output or 'search_path TO "jobs_alt"' in result.output


def test_bad_schema_name_is_a_configuration_error(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--schema", "Robert'); DROP TABLE x;--", "migrate", "--sql"])
    assert result.exit_code == 2
    assert "PGQ_SCHEMA" in result.output


def test_wrong_dsn_error_redacts_the_password(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--database-url", "postgresql://app:s3cr3t-pw@127.0.0.1:1/app", "status"])
    assert result.exit_code == 2
    assert "s3cr3t-pw" not in result.output
    assert "***" in result.output


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["dlq", "requeue"], "job ids, or --all"),
        (["dlq", "requeue", "5", "--all"], "job ids, or --all"),
        (["dlq", "purge", "--yes"], "job ids, or --all"),
        (["bench", "--workers", "0"], "--workers"),
        (["worker", "no_such_module_xyz:q"], "cannot import"),
        (["worker", ":q"], "MODULE:ATTRIBUTE"),
    ],
)
def test_bad_usage_exits_2_with_a_reason(runner: CliRunner, args: list[str], complaint: str) -> None:
    result = runner.invoke(main, ["--database-url", "postgresql://u@127.0.0.1:1/x", *args])
    assert result.exit_code == 2, result.output
    assert complaint in result.output
