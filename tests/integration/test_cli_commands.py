"""The pgq command against a real database: migrate, status, workers, dlq, worker."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

import pgq
from pgq.cli import main
from pgq.migrate import head_revision

pytestmark = pytest.mark.integration


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, db_url: str) -> CliRunner:
    monkeypatch.setenv("PGQ_DATABASE_URL", db_url)
    monkeypatch.delenv("PGQ_SCHEMA", raising=False)
    return CliRunner()


def _count(conn: psycopg.Connection[Any], sql: str) -> int:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def test_migrate_creates_a_new_schema_and_check_reports_it(runner: CliRunner, conn: psycopg.Connection[Any]) -> None:
    before = runner.invoke(main, ["--schema", "pgq_cli", "migrate", "--check"])
    assert before.exit_code == 1
    assert "never migrated" in before.output

    result = runner.invoke(main, ["--schema", "pgq_cli", "migrate"])
    assert result.exit_code == 0, result.output
    assert f"empty -> {head_revision()}" in result.output
    # Every table of a migrated schema (the test database's ``pgq``, migrated by the fixtures).
    tables = "SELECT array_agg(table_name::text ORDER BY 1) FROM information_schema.tables" \
             " WHERE table_schema = %s AND table_type = 'BASE TABLE'"
    created = conn.execute(tables, ("pgq_cli",)).fetchone()
    assert created is not None and created == conn.execute(tables, ("pgq",)).fetchone()
    assert {"jobs", "workers", "alembic_version"} <= set(created[0])

    after = runner.invoke(main, ["--schema", "pgq_cli", "migrate", "--check"])
    assert after.exit_code == 0
    assert "up to date" in after.output


def test_status_json_counts_jobs_by_queue_status_and_priority(runner: CliRunner, settings: pgq.Settings) -> None:
    q = pgq.Queue(settings, strict_tasks=False)
    q.enqueue_many([{"task": "t", "queue": "a", "priority": 5}] * 3 + [{"task": "t", "queue": "b"}])
    q.close()
    result = runner.invoke(main, ["status", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    rows = {(r["queue"], r["status"], r["priority"]): r["jobs"] for r in data["depth"]}
    assert rows == {("a", "queued", 5): 3, ("b", "queued", 3): 1}
    assert data["dead_letters"] == 0

    table = runner.invoke(main, ["status"])
    assert table.exit_code == 0
    assert "queued" in table.output and "dead letter queue: 0" in table.output


def test_status_shows_finished_jobs_as_estimates(runner: CliRunner, settings: pgq.Settings,
                                                 conn: psycopg.Connection[Any]) -> None:
    # queue_stats no longer counts finished jobs (that read the whole table); the
    # statistics' estimate stands in for them once ANALYZE ran.
    conn.execute("INSERT INTO pgq.jobs (task, status, finished_at) SELECT 't', 'completed', now()"
                 " FROM generate_series(1, 300)")
    conn.execute("INSERT INTO pgq.jobs (task) VALUES ('t')")
    before = runner.invoke(main, ["status"])
    assert before.exit_code == 0 and "finished jobs kept" not in before.output  # never analyzed
    conn.execute("ANALYZE pgq.jobs")

    table = runner.invoke(main, ["status"])
    data = json.loads(runner.invoke(main, ["status", "--json"]).output)

    assert table.exit_code == 0
    assert "finished jobs kept (estimate, as of the last ANALYZE): ~300 completed" in table.output
    assert "completed" not in {r["status"] for r in data["depth"]}
    assert data["estimated"] == {"completed": 300}  # one queued job is too rare to be a "common value"


def _kill_job(settings: pgq.Settings, conn: psycopg.Connection[Any], queue: str) -> int:
    """Enqueue a job with one attempt and fail it through the stored functions: it is dead."""
    q = pgq.Queue(settings, strict_tasks=False)
    job_id = q.enqueue("broken.task", {"n": 1}, max_attempts=1, queue=queue)
    q.close()
    worker = "11111111-1111-1111-1111-111111111111"
    conn.execute("SELECT pgq.register_worker(%s, 'cli-test', 1, %s, 1)", (worker, [queue]))
    (claimed,) = conn.execute("SELECT id FROM pgq.get_runnable_jobs(%s, %s, 1)", ([queue], worker)).fetchall()
    assert claimed[0] == job_id
    conn.execute("SELECT pgq.fail_job(%s, %s, 1, 'BoomError', 'it broke')", (job_id, worker))
    return job_id


def test_dlq_list_requeue_and_purge(runner: CliRunner, settings: pgq.Settings, conn: psycopg.Connection[Any]) -> None:
    dead = _kill_job(settings, conn, 'first')

    listed = runner.invoke(main, ["dlq", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    letters = json.loads(listed.output)
    assert [d["job_id"] for d in letters] == [dead]
    assert letters[0]["last_error"] == "BoomError: it broke"

    requeued = runner.invoke(main, ["dlq", "requeue", str(dead)])
    assert requeued.exit_code == 0, requeued.output
    assert "requeued 1 job(s)" in requeued.output
    assert conn.execute("SELECT status::text, attempts FROM pgq.jobs WHERE id = %s", (dead,)).fetchone() == ("queued", 0)

    # Requeueing a job that is not dead fails and changes nothing.
    again = runner.invoke(main, ["dlq", "requeue", str(dead)])
    assert again.exit_code == 1
    assert "not dead" in again.output

    second = _kill_job(settings, conn, 'second')
    purged = runner.invoke(main, ["dlq", "purge", "--all", "--yes"])
    assert purged.exit_code == 0, purged.output
    assert "purged 1 job(s)" in purged.output
    assert _count(conn, f"SELECT count(*) FROM pgq.jobs WHERE id = {second}") == 0
    assert _count(conn, "SELECT count(*) FROM pgq.dead_letter_queue WHERE requeued_at IS NULL") == 0


def test_worker_command_runs_an_app_in_burst_mode(
    runner: CliRunner, settings: pgq.Settings, conn: psycopg.Connection[Any], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = tmp_path / "cli_app_mod.py"
    app.write_text(textwrap.dedent("""
        import pgq
        q = pgq.connect()

        @q.task(name="cli_app.double", queue="cli")
        def double(n: int) -> int:
            return 2 * n
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PGQ_POLL_INTERVAL_SECONDS", "0.1")
    q = pgq.Queue(settings, strict_tasks=False)
    ids = q.enqueue_many([{"task": "cli_app.double", "queue": "cli", "payload": {"n": n}} for n in range(5)])
    result = runner.invoke(main, ["worker", "cli_app_mod:q", "--burst", "-c", "2"])
    sys.modules.pop("cli_app_mod", None)
    assert result.exit_code == 0, result.output
    assert [q.get(i).result for i in ids] == [0, 2, 4, 6, 8]
    q.close()
    assert _count(conn, "SELECT count(*) FROM pgq.workers WHERE status = 'stopped'") == 1


def test_workers_lists_registered_workers(runner: CliRunner, conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT pgq.register_worker('22222222-2222-2222-2222-222222222222', 'host-a', 42, '{x}', 3)")
    result = runner.invoke(main, ["workers", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert (row["hostname"], row["pid"], row["capacity"], row["status"]) == ("host-a", 42, 3, "active")
