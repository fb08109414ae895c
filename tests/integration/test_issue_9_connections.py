"""Issue 9, defects 7 and 8: the statement timeout on a direct connection, and
waiting for a database that is not there yet when a worker starts.

``wait_for_database`` runs with an injected clock and sleep: against a port
where nothing listens (it gives up after the configured time with
``DatabaseUnavailable``, not a configuration error), and against a real
cluster the test starts only after the first failed attempts (the "sleep"
starts it), so nothing here waits for wall-clock time.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

import pgq
from pgq.cli import main
from pgq.clock import ManualClock
from pgq.db import execute, translated, wait_for_database

pytestmark = pytest.mark.integration


def _silent_port() -> int:
    """A local port where nothing listens (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _chaos_cluster() -> Any:
    """The chaos suite's throwaway cluster class (tests/chaos/chaos_cluster.py)."""
    path = Path(__file__).resolve().parents[1] / "chaos" / "chaos_cluster.py"
    spec = importlib.util.spec_from_file_location("chaos_cluster_for_issue_9", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.Cluster


# ---------------------------------------------------------------- statement timeout


def test_statement_timeout_on_a_direct_connection_fails_a_long_statement_with_a_typed_error(
    db_url: str, connect: Callable[..., psycopg.Connection[Any]],
) -> None:
    q = pgq.connect(db_url, statement_timeout_seconds=0.2, strict_tasks=False)
    with q.pool.connection() as pooled:
        assert execute(pooled, "SHOW statement_timeout") == [("200ms",)]  # set once, at session start
        with pytest.raises(pgq.StatementTimeout) as info, translated(db_url):
            execute(pooled, "SELECT pg_sleep(2)")
        assert isinstance(info.value, TimeoutError) and isinstance(info.value, pgq.DatabaseError)
        assert "PGQ_STATEMENT_TIMEOUT_SECONDS" in str(info.value)
    locker = connect(autocommit=False)
    locker.execute("LOCK TABLE pgq.jobs IN ACCESS EXCLUSIVE MODE")
    try:
        with pytest.raises(pgq.StatementTimeout):
            q.enqueue("t.locked", {})
    finally:
        locker.rollback()
    assert connect().execute("SELECT count(*) FROM pgq.jobs").fetchone() == (0,)
    q.close()


def test_statement_timeout_zero_is_off_and_keeps_the_urls_own_options(db_url: str) -> None:
    url = db_url + ("&" if "?" in db_url else "?") + "options=-c%20application_name%3Dmine"
    q = pgq.connect(url, statement_timeout_seconds=0, strict_tasks=False)
    with q.pool.connection() as pooled:
        assert execute(pooled, "SHOW statement_timeout") == [("0",)]
        assert execute(pooled, "SHOW application_name") == [("mine",)]
    q.close()
    q = pgq.connect(url, statement_timeout_seconds=5, strict_tasks=False)
    with q.pool.connection() as pooled:
        assert execute(pooled, "SHOW statement_timeout") == [("5s",)]
        assert execute(pooled, "SHOW application_name") == [("mine",)]
    q.close()


def test_the_default_statement_timeout_is_on() -> None:
    assert 0 < pgq.Settings().statement_timeout_seconds <= 60


# ---------------------------------------------------------------- waiting for the database


def test_wait_for_database_gives_up_on_a_silent_port_with_database_unavailable() -> None:
    clock = ManualClock()
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        clock.advance(seconds)

    url = f"postgresql://postgres@127.0.0.1:{_silent_port()}/postgres"
    with pytest.raises(pgq.DatabaseUnavailable, match="gave up waiting") as info:
        wait_for_database(url, timeout_seconds=3.0, clock=clock, sleep=sleep)
    assert not isinstance(info.value, pgq.ConfigurationError)
    # Backoff doubling from 0.1 s, the last pause cut to the deadline, then one last try.
    assert pauses == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.5])
    assert clock.monotonic() == pytest.approx(3.0)


def test_wait_for_database_returns_once_a_late_server_answers() -> None:
    cluster = _chaos_cluster()()
    clock = ManualClock()
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        clock.advance(seconds)
        if len(pauses) == 2:  # the server comes up after two failed attempts
            cluster.start()

    try:
        cluster.init()
        attempts = wait_for_database(cluster.url(), timeout_seconds=60.0, clock=clock, sleep=sleep)
        assert attempts == 3
        assert pauses == pytest.approx([0.1, 0.2])
    finally:
        cluster.destroy()


def test_wait_for_database_does_not_wait_for_a_wrong_database_name(db_url: str) -> None:
    pauses: list[float] = []
    wrong = db_url.rsplit("/", 1)[0] + "/no_such_database_here"
    with pytest.raises(pgq.ConfigurationError, match="does not exist"):
        wait_for_database(wrong, timeout_seconds=60.0, clock=ManualClock(), sleep=pauses.append)
    assert pauses == []


def _app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> str:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        import pgq
        q = pgq.connect()

        @q.task(name="start.noop", queue="start")
        def noop() -> None:
            return None
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return f"{name}:q"


def test_pgq_worker_that_gives_up_waiting_exits_3_not_the_configuration_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = _app(tmp_path, monkeypatch, "start_app_silent")
    monkeypatch.setenv("PGQ_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{_silent_port()}/postgres")
    monkeypatch.setenv("PGQ_START_TIMEOUT_SECONDS", "0")
    result = CliRunner().invoke(main, ["worker", app, "--burst"])
    sys.modules.pop("start_app_silent", None)
    assert result.exit_code == 3, result.output
    assert "gave up waiting for the database" in result.output


def test_pgq_worker_with_a_wrong_login_still_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str,
) -> None:
    app = _app(tmp_path, monkeypatch, "start_app_wrong_db")
    monkeypatch.setenv("PGQ_DATABASE_URL", db_url.rsplit("/", 1)[0] + "/no_such_database_here")
    result = CliRunner().invoke(main, ["worker", app, "--burst"])
    sys.modules.pop("start_app_wrong_db", None)
    assert result.exit_code == 2, result.output


def test_pgq_worker_takes_the_global_database_url_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str, conn: psycopg.Connection[Any],
) -> None:
    app = _app(tmp_path, monkeypatch, "start_app_option")
    monkeypatch.delenv("PGQ_DATABASE_URL", raising=False)
    q = pgq.connect(db_url, strict_tasks=False)
    job_id = q.enqueue("start.noop", queue="start")
    result = CliRunner().invoke(main, ["--database-url", db_url, "worker", app, "--burst"])
    sys.modules.pop("start_app_option", None)
    assert result.exit_code == 0, result.output
    assert q.get(job_id).status == "completed"
    q.close()


# ---------------------------------------------------------------- no database configured


@pytest.mark.parametrize("args", [["status"], ["dlq", "list"], ["migrate"], ["worker", "APP"]])
def test_with_no_database_the_cli_says_how_to_give_one_on_the_command_line(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PGQ_DATABASE_URL", raising=False)
    if args[0] == "worker":
        args = ["worker", _app(tmp_path, monkeypatch, "start_app_unset")]
    result = CliRunner().invoke(main, args)
    sys.modules.pop("start_app_unset", None)
    assert result.exit_code == 2, result.output
    assert "--database-url" in result.output and "PGQ_DATABASE_URL" in result.output
    assert "pgq.connect" not in result.output


def test_pgq_worker_stopped_while_it_waits_for_the_database_exits_0_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A supervisor stopping a worker that is still starting (the chaos suite's finish()
    # did: exit -15, killed by the signal, before this): a clean stop, not a kill.
    app = _app(tmp_path, monkeypatch, "start_app_stopped")
    env = {**os.environ, "PGQ_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{_silent_port()}/postgres",
           "PGQ_START_TIMEOUT_SECONDS": "600", "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "pgq", "worker", app], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # ends when the process closes stderr (it cannot hang past the test timeout)
            seen.append(line)
            if "not reachable yet" in line:
                break
        assert any("not reachable yet" in line for line in seen), seen
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert code == 0, "".join(seen) + rest
    assert "stopped before the worker started" in rest
