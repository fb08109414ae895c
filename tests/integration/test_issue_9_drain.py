"""Issue 9, defect 5: a worker honours a drain asked in the database.

A DBA's ``SELECT pgq.drain_worker(id)``, an ``UPDATE workers SET status =
'draining'``, or ``pgq workers drain ID``: the worker claims nothing more (at
most the one claim that the database refused, no retry loop: the old worker
logged "claim failed" 57 times in 3 s), releases the jobs it buffered and never
started, lets the running ones finish, deregisters and returns from ``run()``;
``pgq worker`` then exits with code 0. The worker learns of the drain from
whichever comes first: a refused claim (SQLSTATE PQ005), its heartbeat's
answer, or the ``<schema>_worker_draining`` notification.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

import pgq
from factories import RunningWorker, eventually
from pgq.cli import main
from pgq.queries import MirrorQueries, Queries
from pgq.worker import claim_loop
from pgq.worker.prefetch import ALWAYS, ClaimSize

pytestmark = [pytest.mark.integration, pytest.mark.both_modes]

WAIT = 20.0


def worker_row(conn: psycopg.Connection[Any], worker: pgq.Worker) -> tuple[Any, ...]:
    row = conn.execute("SELECT status::text, current_load FROM pgq.workers WHERE id = %s", (worker.id,)).fetchone()
    assert row is not None
    return tuple(row)


def claim_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "claim" in r.getMessage()]


@pytest.fixture
def claims(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The outcome of every claim statement a worker sends, in order: "ok" or the error's
    SQLSTATE (both the Postgres path's and the Redis path's)."""
    outcomes: list[str] = []

    def counted(method: Callable[..., Any]) -> Callable[..., Any]:
        def claim(*args: Any) -> Any:
            try:
                jobs = method(*args)
            except Exception as exc:
                outcomes.append(getattr(exc, "sqlstate", None) or type(exc).__name__)
                raise
            outcomes.append("ok")
            return jobs

        return claim

    for cls, name in ((Queries, "get_runnable_jobs_v2"), (MirrorQueries, "claim_jobs_v2"),
                      (Queries, "get_runnable_jobs"), (MirrorQueries, "claim_jobs")):  # v1: the old worker's
        monkeypatch.setattr(cls, name, counted(getattr(cls, name)))
    return outcomes


@pytest.mark.parametrize("listen", [False, True], ids=["refused-claim", "notification"])
def test_drain_worker_from_sql_stops_an_idle_worker_after_at_most_one_refused_claim(
    settings: pgq.Settings, conn: psycopg.Connection[Any], running: Callable[..., RunningWorker],
    caplog: pytest.LogCaptureFixture, claims: list[str], listen: bool,
) -> None:
    # Without LISTEN the worker polls every 50 ms (its next claim is refused); with it, the
    # poll is a minute away and the notification must tell it.
    s = settings.replace(listen=listen, poll_interval_seconds=60.0 if listen else 0.05,
                         redis_poll_interval_seconds=60.0 if listen else 0.05)
    q = pgq.connect(settings=s, strict_tasks=False)
    try:
        worker = q.worker(queues=["default"], install_signal_handlers=False, run_maintenance=False)
        heard: list[tuple[str, str]] = []
        on_notify = worker._on_notify

        def spy(channel: str, payload: str) -> None:
            heard.append((channel, payload))
            on_notify(channel, payload)

        worker._on_notify = spy  # type: ignore[method-assign]  # the listener is made at run()
        r = running(worker)
        if listen:
            eventually(lambda: worker._listener is not None and worker._listener.connected.is_set(), "LISTEN")
        else:
            eventually(lambda: claims, "the worker to claim (nothing)")
        before = len(claims)
        caplog.set_level(logging.INFO, logger="pgq")
        assert conn.execute("SELECT pgq.drain_worker(%s)", (worker.id,)).fetchone() == (True,)
        r.join()
    finally:
        q.close()
    after = claims[before:]
    if listen:
        # The notification reached the worker. The catch-up claim the listener asks for
        # when it connects may still be in flight at the drain, and be refused first.
        assert (q.queries.channel_worker_draining, str(worker.id)) in heard
        assert after.count("PQ005") <= 1, after
        assert worker.drained_by in ("notification", "a claim was refused: the worker is draining (PQ005)")
    else:
        # A claim already sent may still succeed; the next is refused, and none follows it.
        assert after.count("PQ005") == 1 and after[-1] == "PQ005", after
        assert worker.drained_by == "a claim was refused: the worker is draining (PQ005)"
    assert claim_warnings(caplog) == []
    assert worker_row(conn, worker) == ("stopped", 0)


def test_a_dba_update_to_draining_releases_the_buffered_job_and_lets_the_running_one_finish(
    settings: pgq.Settings, conn: psycopg.Connection[Any], running: Callable[..., RunningWorker],
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, claims: list[str],
) -> None:
    # One runner, one more job claimed and buffered behind it.
    def sized(*, concurrency: int, batch_size: int, rate: float, in_flight: int, claiming: int) -> ClaimSize:
        free = concurrency + 1 - in_flight - claiming
        return ClaimSize(min(free, batch_size), ALWAYS) if free > 0 else ClaimSize(0, -1)

    monkeypatch.setattr(claim_loop, "size_claim", sized)
    # No LISTEN, and heartbeats and polls a minute or so apart: the test sends the heartbeat.
    s = settings.replace(listen=False, poll_interval_seconds=60.0, redis_poll_interval_seconds=60.0,
                         heartbeat_interval_seconds=50.0, stale_after_seconds=120.0, shutdown_grace_seconds=30.0)
    q = pgq.connect(settings=s, strict_tasks=False)
    started, finish = threading.Event(), threading.Event()

    @q.task(name="long")
    def long() -> str:
        started.set()
        assert finish.wait(WAIT)
        return "finished"

    try:
        running_id, buffered_id = q.enqueue("long"), q.enqueue("long")
        worker = q.worker(queues=["default"], concurrency=1, install_signal_handlers=False, run_maintenance=False)
        r = running(worker)
        assert started.wait(WAIT)
        eventually(lambda: conn.execute("SELECT count(*) FROM pgq.jobs WHERE worker_id = %s AND status = 'running'",
                                        (worker.id,)).fetchone() == (2,), "both jobs to be claimed")
        before = len(claims)
        caplog.set_level(logging.INFO, logger="pgq")
        conn.execute("UPDATE pgq.workers SET status = 'draining' WHERE id = %s", (worker.id,))
        worker.heartbeat()  # answers 'draining': the worker stops claiming
        assert worker.drained_by == "the heartbeat's answer"
        finish.set()
        r.join()
        assert q.wait(running_id, timeout=WAIT) == "finished"
        buffered = q.get(buffered_id)
    finally:
        finish.set()
        q.close()
    assert claims[before:] == []
    assert (buffered.status, buffered.attempts, buffered.worker_id) == (pgq.JobStatus.QUEUED, 0, None)
    assert worker.counters.released == 1
    assert claim_warnings(caplog) == []
    assert worker_row(conn, worker) == ("stopped", 0)


APP = """
import threading

import pgq

q = pgq.connect()


@q.task(name="drain_app.wait", queue="drain")
def wait() -> str:
    return "done"
"""


@pytest.mark.slow  # a process
def test_pgq_workers_drain_stops_a_pgq_worker_process_which_exits_0(
    settings: pgq.Settings, db_url: str, conn: psycopg.Connection[Any], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "drain_app.py").write_text(textwrap.dedent(APP))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQ_")}
    env.update(PGQ_DATABASE_URL=db_url, PGQ_SCHEMA="pgq", PGQ_POLL_INTERVAL_SECONDS="0.2",
               PYTHONPATH=os.pathsep.join([str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]))
    if settings.redis_url is not None:
        env.update(PGQ_REDIS_URL=settings.redis_url, PGQ_REDIS_PREFIX=settings.redis_prefix)
    proc = subprocess.Popen([sys.executable, "-m", "pgq.cli", "-v", "worker", "drain_app:q"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        row = eventually(lambda: conn.execute("SELECT id FROM pgq.workers WHERE pid = %s AND status = 'active'",
                                              (proc.pid,)).fetchone(), "the worker to register", timeout=60)
        worker_id = row[0]
        monkeypatch.setenv("PGQ_DATABASE_URL", db_url)
        monkeypatch.delenv("PGQ_SCHEMA", raising=False)
        # The short id `pgq workers` shows is enough.
        result = CliRunner().invoke(main, ["workers", "drain", str(worker_id)[:8]])
        assert result.exit_code == 0, result.output
        assert result.output.strip() == f"worker {worker_id}: asked to drain"
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
    code = proc.returncode
    assert code == 0, output
    assert f"worker {worker_id}: drained as asked" in output
    assert "claim failed" not in output
    assert conn.execute("SELECT status::text FROM pgq.workers WHERE id = %s", (worker_id,)).fetchone() == ("stopped",)
    # Asked again: the worker is stopped, a failed operation (exit code 1), naming it.
    again = CliRunner().invoke(main, ["workers", "drain", str(worker_id)])
    assert again.exit_code == 1 and "stopped" in again.output


def test_pgq_workers_drain_refuses_an_id_that_names_no_live_worker(
    conn: psycopg.Connection[Any], db_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGQ_DATABASE_URL", db_url)
    monkeypatch.delenv("PGQ_SCHEMA", raising=False)
    for wid in ("aaaaaaaa-0000-0000-0000-000000000001", "aaaaaaaa-0000-0000-0000-000000000002"):
        conn.execute("SELECT pgq.register_worker(%s, 'h', 1, '{default}', 1)", (wid,))
    before = conn.execute("SELECT id, status::text FROM pgq.workers ORDER BY id").fetchall()
    ambiguous = CliRunner().invoke(main, ["workers", "drain", "aaaaaaaa"])
    assert ambiguous.exit_code == 2 and "2 match" in ambiguous.output
    unknown = CliRunner().invoke(main, ["workers", "drain", "bbbbbbbb-0000-0000-0000-000000000001"])
    assert unknown.exit_code == 1 and "not registered" in unknown.output
    assert conn.execute("SELECT id, status::text FROM pgq.workers ORDER BY id").fetchall() == before
    done = CliRunner().invoke(main, ["workers", "drain", "aaaaaaaa-0000-0000-0000-000000000002"])
    assert done.exit_code == 0 and done.output.endswith("asked to drain\n")
