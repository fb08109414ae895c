"""Process-isolated sync handlers: a hard limit (issue 9, defect 4).

``@q.task(..., isolation="process")`` runs the handler in a child process of
the worker; at the job's timeout (or on cancel, or at the end of the shutdown
grace) the child is killed, so the job really stops, and the next job gets a
fresh child. Real subprocesses, a real database; deadlines follow the worker's
``ManualClock``; a child tells the test it started by writing its pid to a
file, which the test polls for with a deadline (nothing sleeps for timing).
"""

from __future__ import annotations

import asyncio
import functools
import os
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import process_handlers
import psycopg
import pytest

import factories
import pgq
from factories import RunningWorker, eventually
from pgq.clock import ManualClock

pytestmark = pytest.mark.integration

WAIT = 20.0  # a child's first job imports pgq and the handler's module


@pytest.fixture
def q(short: pgq.Settings) -> Iterator[pgq.Queue]:
    queue = pgq.connect(settings=short)
    yield queue
    queue.close()


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def pid_in(marker: Path) -> int:
    text = eventually(lambda: marker.exists() and marker.read_text(), f"the handler to start ({marker})", WAIT)
    return int(text)


def status(conn: psycopg.Connection[Any], job_id: int) -> str:
    return str(factories.job(conn, job_id)["status"])


def worker_of(q: pgq.Queue, clock: ManualClock | None = None, **options: Any) -> pgq.Worker:
    return q.worker(queues=["default"], install_signal_handlers=False, run_maintenance=False,
                    clock=clock, **options)


# ---------------------------------------------------------------- running


def test_a_process_handler_returns_its_result(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    q.task(name="add", isolation="process")(process_handlers.add)
    job_id = q.enqueue("add", {"a": 2, "b": 3})
    assert worker_of(q).run_once() == 1
    result = q.wait(job_id, timeout=WAIT)
    assert (result["sum"], result["job"]) == (5, job_id)  # current_job() works in the child
    assert result["pid"] != os.getpid()
    assert [r[:2] for r in conn.execute("SELECT attempt, outcome::text FROM pgq.job_executions WHERE job_id = %s",
                                        (job_id,))] == [(1, "completed")]


def test_retry_fatal_and_result_rules_are_the_thread_paths(q: pgq.Queue, conn: psycopg.Connection[Any],
                                                           tmp_path: Path) -> None:
    q.task(name="retry_once", isolation="process", max_attempts=3)(process_handlers.retry_once)
    q.task(name="not_json", isolation="process", max_attempts=3)(process_handlers.not_json)
    again = q.enqueue("retry_once", {"marker": str(tmp_path / "once")})
    bad = q.enqueue("not_json")
    worker_of(q).run(burst=True)
    assert (q.get(again).result, q.get(again).attempts) == ("second", 2)
    assert status(conn, bad) == "dead" and "ResultNotSerialisable" in (q.get(bad).last_error or "")


# ---------------------------------------------------------------- killing


def test_a_handler_that_loops_forever_is_killed_at_its_timeout(
    q: pgq.Queue, conn: psycopg.Connection[Any], tmp_path: Path, running: Callable[..., RunningWorker],
) -> None:
    q.task(name="loop", isolation="process", timeout=5, max_attempts=2)(process_handlers.loop_forever)
    q.task(name="add", isolation="process")(process_handlers.add)
    clock = ManualClock()
    worker = worker_of(q, clock, concurrency=1)
    run = running(worker)
    first, second = tmp_path / "first", tmp_path / "second"
    job_id = q.enqueue("loop", {"marker": str(first)})
    pid = pid_in(first)
    assert alive(pid)

    clock.advance(5.0)  # the job's deadline
    eventually(lambda: status(conn, job_id) == "retrying", "the job to be failed at its timeout")
    eventually(lambda: not alive(pid), "the handler's process to be killed")
    assert factories.job(conn, job_id)["last_error"].startswith("JobTimeout")

    # Its retry runs in a new process, and is killed in turn: dead, per its max_attempts.
    conn.execute("UPDATE pgq.jobs SET run_at = now(), payload = %s WHERE id = %s",
                 (f'{{"marker": "{second}"}}', job_id))
    worker._wake.set()
    pid2 = pid_in(second)
    assert pid2 != pid
    clock.advance(5.0)
    eventually(lambda: status(conn, job_id) == "dead", "the second attempt to be failed too")
    eventually(lambda: not alive(pid2), "the second process to be killed")
    outcomes = conn.execute("SELECT attempt, outcome::text, error_type FROM pgq.job_executions WHERE job_id = %s"
                            " ORDER BY id", (job_id,)).fetchall()
    assert outcomes == [(1, "timed_out", "JobTimeout"), (2, "timed_out", "JobTimeout")]

    # The worker kept its capacity (concurrency 1): the next job runs, in a fresh process.
    after = q.enqueue("add", {"a": 1, "b": 1})
    assert q.wait(after, timeout=WAIT)["sum"] == 2
    assert worker.stuck_handlers == 0
    run.stop()


def test_cancel_kills_a_process_handler(q: pgq.Queue, conn: psycopg.Connection[Any], tmp_path: Path,
                                        running: Callable[..., RunningWorker]) -> None:
    q.task(name="loop", isolation="process")(process_handlers.loop_forever)  # no timeout at all
    q.task(name="add", isolation="process")(process_handlers.add)
    run = running(worker_of(q, concurrency=1))
    job_id = q.enqueue("loop", {"marker": str(tmp_path / "m")})
    pid = pid_in(tmp_path / "m")
    assert q.cancel(job_id)
    eventually(lambda: not alive(pid), "the cancelled handler's process to be killed")
    assert status(conn, job_id) == "cancelled"
    after = q.enqueue("add", {"a": 2, "b": 2})
    assert q.wait(after, timeout=WAIT)["sum"] == 4
    run.stop()


def test_a_process_that_dies_fails_its_job_and_is_replaced(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    q.task(name="crash", isolation="process", max_attempts=1)(process_handlers.crash)
    q.task(name="add", isolation="process")(process_handlers.add)
    crashed = q.enqueue("crash")
    worker = worker_of(q, concurrency=1)
    assert worker.run_once() == 1
    assert status(conn, crashed) == "dead"
    assert "exited with code 3" in (q.get(crashed).last_error or "")
    after = q.enqueue("add", {"a": 3, "b": 4})
    assert worker.run_once() == 1
    assert q.wait(after, timeout=WAIT)["sum"] == 7


def test_shutdown_kills_a_running_process_handler_before_deregistering(
    q: pgq.Queue, conn: psycopg.Connection[Any], tmp_path: Path, running: Callable[..., RunningWorker],
) -> None:
    q.task(name="loop", isolation="process")(process_handlers.loop_forever)
    worker = worker_of(q, concurrency=1)
    run = running(worker)
    job_id = q.enqueue("loop", {"marker": str(tmp_path / "m")})
    pid = pid_in(tmp_path / "m")
    run.stop(now=True)
    assert not alive(pid)  # dead when run() returned: no second copy while the job runs again elsewhere
    assert factories.worker(conn, worker.id)["status"] == "stopped"
    assert status(conn, job_id) in ("queued", "retrying")  # given back, to run again


# ---------------------------------------------------------------- bad handlers, at registration


async def _async_handler() -> None:
    await asyncio.sleep(0)


class _Callable:
    def __call__(self) -> None:
        return None


@pytest.mark.parametrize("handler, why", [
    (lambda: None, "lambda or a nested function"),
    (functools.partial(process_handlers.add, 1), "plain function"),
    (_Callable(), "plain function"),
    (_async_handler, "async def"),
])
def test_a_handler_that_cannot_run_in_a_process_is_refused(q: pgq.Queue, handler: Any, why: str) -> None:
    with pytest.raises(pgq.ValidationError, match=why):
        q.task(name="bad", isolation="process")(handler)
    assert "bad" not in q.tasks


def test_a_nested_or_main_handler_is_refused(q: pgq.Queue) -> None:
    def nested() -> None:
        return None

    with pytest.raises(pgq.ValidationError, match="nested"):
        q.task(name="nested", isolation="process")(nested)
    in_main = types.FunctionType(process_handlers.add.__code__, {}, "add")
    in_main.__module__ = "__main__"
    with pytest.raises(pgq.ValidationError, match="__main__"):
        q.task(name="main", isolation="process")(in_main)
    with pytest.raises(pgq.ValidationError, match="isolation must be"):
        q.task(name="x", isolation="subprocess")(process_handlers.add)  # type: ignore[call-overload]
    assert q.tasks == {}


def test_a_handler_its_module_does_not_name_is_refused_by_the_worker(q: pgq.Queue) -> None:
    # Same module and name as process_handlers.add, but another function object.
    impostor = types.FunctionType(process_handlers.add.__code__, process_handlers.__dict__, "add")
    impostor.__qualname__ = "add"
    q.task(name="impostor", isolation="process")(impostor)
    with pytest.raises(pgq.ValidationError, match="names another object"):
        worker_of(q)
    gone = types.FunctionType(process_handlers.add.__code__, process_handlers.__dict__, "vanished")
    gone.__qualname__ = "vanished"
    q.tasks.clear()
    q.task(name="gone", isolation="process")(gone)
    with pytest.raises(pgq.ValidationError, match="cannot be imported by name"):
        worker_of(q)
