"""Hostile input at every public entry point: a typed error naming the problem, and nothing changed.

Three doors, one rule (SPEC §1.6):

- the Python API (``pgq.connect``, ``Queue`` methods, ``@task``, ``Worker``),
  which must raise a ``pgq`` error class naming the argument;
- the ``pgq`` command, which must exit 2 for bad usage (1 for an operation
  that failed on good input) and say why;
- the stored functions called from SQL, which must fail with a documented
  SQLSTATE (``db/README.md``) that ``pgq.db.translate`` maps to the matching
  ``pgq`` error, or, for the fenced outcome functions, return "stale" (false /
  no id) as documented.

Every case runs inside ``unchanged(conn)``, which compares every row of every
pgq table before and after. Cases already covered elsewhere (tests/unit for
JobSpec and Settings parsing, test_queue_api for the common enqueue mistakes)
are not repeated one by one; this file sweeps the whole surface.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

import factories
import pgq
from pgq.cli import main
from pgq.db import translate
from pgq.job import JobSpec
from pgq.sqlfiles import sql_dir

pytestmark = pytest.mark.integration

UTC = dt.UTC
INJECTION = "x'); DROP TABLE pgq.jobs; --"
NOT_UTF8 = "lone \ud800 surrogate"


@contextlib.contextmanager
def unchanged(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Every row of every pgq table is the same after the block as before it."""
    before = factories.snapshot(conn)
    yield
    assert factories.snapshot(conn) == before


def circular() -> dict[str, Any]:
    value: dict[str, Any] = {"a": []}
    value["a"].append(value)
    return value


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"a": value}
    return value


def _matrix_queue(settings: pgq.Settings) -> pgq.Queue:
    queue = pgq.connect(settings=settings.replace(max_payload_bytes=10_000))

    @queue.task(name="matrix.task")
    def task(**kwargs: Any) -> None:
        return None

    return queue


@pytest.fixture
def q(settings: pgq.Settings) -> Iterator[pgq.Queue]:
    queue = _matrix_queue(settings)
    yield queue
    queue.close()


@pytest.fixture(scope="module")
def shared(module_conn: psycopg.Connection[Any], pg_server: Any) -> Iterator[tuple[pgq.Queue, psycopg.Connection[Any]]]:
    """One database and queue for the ~170 refusals of the Python API, which write
    nothing (each case still compares every row before and after itself)."""
    factories.insert_job(module_conn, task="matrix.task", status="dead")  # something for requeue/purge to touch
    queue = _matrix_queue(pgq.Settings(database_url=pg_server.url_for(module_conn.info.dbname)))
    yield queue, module_conn
    queue.close()


# ---------------------------------------------------------------- Python API

Case = tuple[str, Callable[[pgq.Queue], Any], type[Exception], str]

ENQUEUE_CASES: list[Case] = [
    # task
    ("task int", lambda q: q.enqueue(42), pgq.ValidationError, "task name"),
    ("task None", lambda q: q.enqueue(None), pgq.ValidationError, "task name"),
    ("task empty", lambda q: q.enqueue(""), pgq.ValidationError, "task name"),
    ("task quote", lambda q: q.enqueue(INJECTION), pgq.ValidationError, "task name"),
    ("task newline", lambda q: q.enqueue("matrix.task\n"), pgq.ValidationError, "task name"),
    ("task non-ascii", lambda q: q.enqueue("tâche"), pgq.ValidationError, "task name"),
    ("task too long", lambda q: q.enqueue("t" * 201), pgq.ValidationError, "task name"),
    ("task unknown", lambda q: q.enqueue("not.registered"), pgq.UnknownTask, "not.registered"),
    # payload
    ("payload str", lambda q: q.enqueue("matrix.task", "{}"), pgq.ValidationError, "payload"),
    ("payload list", lambda q: q.enqueue("matrix.task", [1]), pgq.ValidationError, "payload"),
    ("payload int key", lambda q: q.enqueue("matrix.task", {1: "a"}), pgq.ValidationError, "payload keys"),
    ("payload object", lambda q: q.enqueue("matrix.task", {"a": object()}), pgq.ValidationError, "JSON"),
    ("payload bytes", lambda q: q.enqueue("matrix.task", {"a": b"\xff"}), pgq.ValidationError, "JSON"),
    ("payload nan", lambda q: q.enqueue("matrix.task", {"a": math.nan}), pgq.ValidationError, "JSON"),
    ("payload NUL value", lambda q: q.enqueue("matrix.task", {"a": "x\x00y"}), pgq.ValidationError, "NUL"),
    ("payload NUL key", lambda q: q.enqueue("matrix.task", {"\x00": 1}), pgq.ValidationError, "NUL"),
    ("payload not UTF-8", lambda q: q.enqueue("matrix.task", {"a": NOT_UTF8}), pgq.ValidationError, "UTF-8"),
    ("payload too deep", lambda q: q.enqueue("matrix.task", deep(5000)), pgq.ValidationError, "nested too deeply"),
    ("payload huge int", lambda q: q.enqueue("matrix.task", {"a": 10**5000}), pgq.ValidationError, "JSON"),
    ("payload over limit", lambda q: q.enqueue("matrix.task", {"a": "x" * 10_000}), pgq.ValidationError,
     "PGQ_MAX_PAYLOAD_BYTES"),
    ("payload circular", lambda q: q.enqueue("matrix.task", circular()), pgq.ValidationError, "JSON"),
    # queue
    ("queue empty", lambda q: q.enqueue("matrix.task", queue=""), pgq.ValidationError, "queue name"),
    ("queue space", lambda q: q.enqueue("matrix.task", queue="a b"), pgq.ValidationError, "queue name"),
    ("queue quote", lambda q: q.enqueue("matrix.task", queue=INJECTION), pgq.ValidationError, "queue name"),
    ("queue newline", lambda q: q.enqueue("matrix.task", queue="emails\n"), pgq.ValidationError, "queue name"),
    ("queue int", lambda q: q.enqueue("matrix.task", queue=5), pgq.ValidationError, "queue name"),
    ("queue too long", lambda q: q.enqueue("matrix.task", queue="q" * 101), pgq.ValidationError, "queue name"),
    # numbers
    ("priority 0", lambda q: q.enqueue("matrix.task", priority=0), pgq.ValidationError, "priority"),
    ("priority 6", lambda q: q.enqueue("matrix.task", priority=6), pgq.ValidationError, "priority"),
    ("priority bool", lambda q: q.enqueue("matrix.task", priority=True), pgq.ValidationError, "priority"),
    ("priority str", lambda q: q.enqueue("matrix.task", priority="5"), pgq.ValidationError, "priority"),
    ("priority float", lambda q: q.enqueue("matrix.task", priority=2.5), pgq.ValidationError, "priority"),
    ("delay negative", lambda q: q.enqueue("matrix.task", delay=-0.5), pgq.ValidationError, "delay"),
    ("delay nan", lambda q: q.enqueue("matrix.task", delay=math.nan), pgq.ValidationError, "delay"),
    ("delay inf", lambda q: q.enqueue("matrix.task", delay=math.inf), pgq.ValidationError, "delay"),
    ("delay too far", lambda q: q.enqueue("matrix.task", delay=10**10), pgq.ValidationError, "delay"),
    ("delay str", lambda q: q.enqueue("matrix.task", delay="10"), pgq.ValidationError, "delay"),
    ("delay timedelta<0", lambda q: q.enqueue("matrix.task", delay=dt.timedelta(seconds=-1)), pgq.ValidationError,
     "delay"),
    ("run_at naive", lambda q: q.enqueue("matrix.task", run_at=dt.datetime(2030, 1, 1)), pgq.ValidationError,
     "run_at"),
    ("run_at str", lambda q: q.enqueue("matrix.task", run_at="2030-01-01T00:00:00Z"), pgq.ValidationError, "run_at"),
    ("run_at and delay", lambda q: q.enqueue("matrix.task", delay=1, run_at=dt.datetime(2030, 1, 1, tzinfo=UTC)),
     pgq.ValidationError, "run_at"),
    ("max_attempts 0", lambda q: q.enqueue("matrix.task", max_attempts=0), pgq.ValidationError, "max_attempts"),
    ("max_attempts 1001", lambda q: q.enqueue("matrix.task", max_attempts=1001), pgq.ValidationError,
     "max_attempts"),
    ("max_attempts float", lambda q: q.enqueue("matrix.task", max_attempts=2.0), pgq.ValidationError,
     "max_attempts"),
    ("timeout 0", lambda q: q.enqueue("matrix.task", timeout=0), pgq.ValidationError, "timeout"),
    ("timeout nan", lambda q: q.enqueue("matrix.task", timeout=math.nan), pgq.ValidationError, "timeout"),
    ("timeout str", lambda q: q.enqueue("matrix.task", timeout="30"), pgq.ValidationError, "timeout"),
    # unique key
    ("unique_key empty", lambda q: q.enqueue("matrix.task", unique_key=""), pgq.ValidationError, "unique_key"),
    ("unique_key long", lambda q: q.enqueue("matrix.task", unique_key="k" * 201), pgq.ValidationError, "unique_key"),
    ("unique_key int", lambda q: q.enqueue("matrix.task", unique_key=42), pgq.ValidationError, "unique_key"),
    ("unique_key NUL", lambda q: q.enqueue("matrix.task", unique_key="a\x00b"), pgq.ValidationError, "NUL"),
    ("unique_key not UTF-8", lambda q: q.enqueue("matrix.task", unique_key=NOT_UTF8), pgq.ValidationError, "UTF-8"),
    # options
    ("retry int", lambda q: q.enqueue("matrix.task", retry=3), pgq.ValidationError, "retry"),
    ("retry dict", lambda q: q.enqueue("matrix.task", retry={"base": 1}), pgq.ValidationError, "retry"),
    ("on_duplicate", lambda q: q.enqueue("matrix.task", on_duplicate="ignore"), pgq.ValidationError, "on_duplicate"),
    ("unknown option", lambda q: q.enqueue("matrix.task", priorty=5), pgq.ValidationError, "priorty"),
    ("connection kind", lambda q: q.enqueue("matrix.task", connection=object()), pgq.ValidationError, "connection="),
    ("task.enqueue option", lambda q: q.tasks["matrix.task"].enqueue({}, delay_seconds=5), pgq.ValidationError,
     "delay_seconds"),
]


def _spec(**changes: Any) -> JobSpec:
    fields: dict[str, Any] = {
        "task": "matrix.task", "payload_json": "{}", "queue": "default", "priority": 3, "delay_seconds": None,
        "run_at": None, "max_attempts": 3, "timeout_seconds": None, "unique_key": None, "backoff": None,
    }
    fields.update(changes)
    return JobSpec(**fields)


GOOD = {"task": "matrix.task", "payload": {"n": 1}}

ENQUEUE_MANY_CASES: list[Case] = [
    ("jobs None", lambda q: q.enqueue_many(None), pgq.ValidationError, "list"),
    ("jobs int", lambda q: q.enqueue_many(5), pgq.ValidationError, "list"),
    ("jobs str", lambda q: q.enqueue_many("matrix.task"), pgq.ValidationError, "list"),
    ("jobs dict", lambda q: q.enqueue_many(GOOD), pgq.ValidationError, "list"),
    ("item int", lambda q: q.enqueue_many([GOOD, 5]), pgq.ValidationError, "job 1"),
    ("item no task", lambda q: q.enqueue_many([GOOD, {"payload": {}}]), pgq.ValidationError, "job 1"),
    ("item bad priority", lambda q: q.enqueue_many([GOOD, {**GOOD, "priority": 9}]), pgq.ValidationError, "job 1"),
    ("item unknown option", lambda q: q.enqueue_many([GOOD, {**GOOD, "prio": 9}]), pgq.ValidationError, "job 1"),
    ("item unknown task", lambda q: q.enqueue_many([GOOD, {"task": "nope"}]), pgq.UnknownTask, "job 1"),
    ("item NUL", lambda q: q.enqueue_many([GOOD, {**GOOD, "payload": {"a": "\x00"}}]), pgq.ValidationError, "NUL"),
    # A JobSpec built by hand skips JobSpec.build: the table's CHECK constraints
    # still refuse it, on every path (single INSERT, COPY, enqueue_jobs()).
    ("spec bad task, INSERT", lambda q: q.enqueue_many([_spec(task="bad task")]), pgq.ValidationError,
     "jobs_task_name"),
    ("spec bad priority, COPY", lambda q: q.enqueue_many([_spec(), _spec(priority=9)]), pgq.ValidationError,
     "jobs_priority_range"),
    ("spec list payload, function", lambda q: q.enqueue_many([_spec(payload_json="[1]", unique_key="k")]),
     pgq.ValidationError, "jobs_payload_object"),
    ("spec not JSON", lambda q: q.enqueue_many([_spec(payload_json="{")]), pgq.ValidationError, "json"),
    ("spec NUL in JSON", lambda q: q.enqueue_many([_spec(payload_json='{"a": "\\u0000"}')]), pgq.ValidationError,
     "unicode escape"),
    ("spec over 8 MiB", lambda q: q.enqueue_many([_spec(payload_json='{"a": "' + "x" * (8 << 20) + '"}')]),
     pgq.ValidationError, "jobs_payload_size"),
]

ID_CASES: list[Case] = [
    *((f"get {bad!r}", (lambda b: lambda q: q.get(b))(bad), pgq.ValidationError, "job id")
      for bad in (0, -1, True, "1", 1.0, None, 2**63)),
    ("get unknown", lambda q: q.get(987_654), pgq.JobNotFound, "987654"),
    *((f"cancel {bad!r}", (lambda b: lambda q: q.cancel(b))(bad), pgq.ValidationError, "job id")
      for bad in (0, "1", None)),
    ("cancel unknown", lambda q: q.cancel(987_654), pgq.JobNotFound, "987654"),
    ("wait unknown", lambda q: q.wait(987_654, timeout=1), pgq.JobNotFound, "987654"),
    ("wait bad id", lambda q: q.wait("7"), pgq.ValidationError, "job id"),
    *((f"wait timeout {bad!r}", (lambda b: lambda q: q.wait(1, timeout=b))(bad), pgq.ValidationError, "timeout")
      for bad in (-1, math.nan, math.inf, "1", True)),
    *((f"wait poll {bad!r}", (lambda b: lambda q: q.wait(1, timeout=1, poll_interval=b))(bad), pgq.ValidationError,
       "poll_interval") for bad in (0, -0.1, math.nan, math.inf, "0.1")),
    ("dead_letters queue", lambda q: q.dead_letters(queue=INJECTION), pgq.ValidationError, "queue name"),
    *((f"dead_letters limit {bad!r}", (lambda b: lambda q: q.dead_letters(limit=b))(bad), pgq.ValidationError,
       "limit") for bad in (0, -5, True, "10", 2**31, 1.5)),
    *((f"requeue ids {bad!r}", (lambda b: lambda q: q.requeue_dead(b))(bad), pgq.ValidationError, "job id")
      for bad in (5, "123", {1: 1}, [0], ["1"], [None], [True])),
    ("requeue unknown", lambda q: q.requeue_dead([987_654]), pgq.JobNotFound, "987654"),
    ("requeue queue", lambda q: q.requeue_dead(queue="a b"), pgq.ValidationError, "queue name"),
    *((f"purge ids {bad!r}", (lambda b: lambda q: q.purge_dead(b))(bad), pgq.ValidationError, "job id")
      for bad in (5, "1", [-1], [2**63])),
    *((f"purge older_than {bad!r}", (lambda b: lambda q: q.purge_dead(None, older_than=b))(bad),
       pgq.ValidationError, "older_than") for bad in (-1, math.nan, math.inf, "0", True)),
]


def _register(q: pgq.Queue, fn: Any = None, **options: Any) -> Any:
    return q.task(**options)(fn if fn is not None else (lambda: None))


TASK_CASES: list[Case] = [
    ("name empty", lambda q: _register(q, name=""), pgq.ValidationError, "task name"),
    ("name spaces", lambda q: _register(q, name="my task"), pgq.ValidationError, "task name"),
    ("name int", lambda q: _register(q, name=5), pgq.ValidationError, "task name"),
    ("name taken", lambda q: _register(q, name="matrix.task"), pgq.ValidationError, "already registered"),
    ("queue empty", lambda q: _register(q, name="t.a", queue=""), pgq.ValidationError, "queue name"),
    ("queue quote", lambda q: _register(q, name="t.b", queue=INJECTION), pgq.ValidationError, "queue name"),
    ("priority", lambda q: _register(q, name="t.c", priority=9), pgq.ValidationError, "priority"),
    ("max_attempts", lambda q: _register(q, name="t.d", max_attempts=0), pgq.ValidationError, "max_attempts"),
    ("timeout", lambda q: _register(q, name="t.e", timeout=-1), pgq.ValidationError, "timeout"),
    ("retry", lambda q: _register(q, name="t.f", retry=2.0), pgq.ValidationError, "retry"),
    ("not callable", lambda q: q.task(5), pgq.ValidationError, "function"),
    ("backoff nan", lambda q: _register(q, name="t.g", retry=pgq.Backoff(base=math.nan)), pgq.ValidationError,
     "Backoff.base"),
]

WORKER_CASES: list[Case] = [
    ("queue not a Queue", lambda q: pgq.Worker(object()), pgq.ValidationError, "pgq.Queue"),  # type: ignore[arg-type]
    *((f"queues {bad!r}", (lambda b: lambda q: q.worker(queues=b))(bad), pgq.ValidationError, "queue")
      for bad in ("emails", [], 5, ["a b"], [INJECTION], [["a"]], [None], ["ok\n"])),
    *((f"concurrency {bad!r}", (lambda b: lambda q: q.worker(concurrency=b))(bad), pgq.ValidationError,
       "concurrency") for bad in (0, 10_001, True, "4", 2.0)),
    *((f"batch {bad!r}", (lambda b: lambda q: q.worker(batch_size=b))(bad), pgq.ValidationError, "batch_size")
      for bad in (0, -1, "5", False)),
    *((f"worker_id {bad!r}", (lambda b: lambda q: q.worker(worker_id=b))(bad), pgq.ValidationError, "worker_id")
      for bad in ("0b2f7f5e-0000-4000-8000-000000000000", 5)),
]

CONNECT_CASES: list[Case] = [
    ("url int", lambda q: pgq.connect(123), pgq.ConfigurationError, "PGQ_DATABASE_URL"),
    ("url blank", lambda q: pgq.connect("  "), pgq.ConfigurationError, "PGQ_DATABASE_URL"),
    ("schema quote", lambda q: pgq.connect(q.settings.database_url, schema="pgq; DROP SCHEMA pgq CASCADE"),
     pgq.ConfigurationError, "PGQ_SCHEMA"),
    ("schema capital", lambda q: pgq.connect(q.settings.database_url, schema="Pgq"), pgq.ConfigurationError,
     "PGQ_SCHEMA"),
    ("schema newline", lambda q: pgq.connect(q.settings.database_url, schema="pgq\n"), pgq.ConfigurationError,
     "PGQ_SCHEMA"),
    ("schema too long", lambda q: pgq.connect(q.settings.database_url, schema="s" * 41), pgq.ConfigurationError,
     "PGQ_SCHEMA"),
    ("unknown setting", lambda q: pgq.connect(q.settings.database_url, pool_sise=3), pgq.ConfigurationError,
     "pool_sise"),
    ("payload limit 0", lambda q: pgq.connect(q.settings.database_url, max_payload_bytes=0), pgq.ConfigurationError,
     "PGQ_MAX_PAYLOAD_BYTES"),
    ("payload limit str", lambda q: pgq.connect(q.settings.database_url, max_payload_bytes="1MB"),
     pgq.ConfigurationError, "PGQ_MAX_PAYLOAD_BYTES"),
    ("env payload limit", lambda q: pgq.Settings.from_env({"PGQ_MAX_PAYLOAD_BYTES": "1MiB"}), pgq.ConfigurationError,
     "PGQ_MAX_PAYLOAD_BYTES"),
    ("env schema", lambda q: pgq.Settings.from_env({"PGQ_SCHEMA": "pgq;drop"}), pgq.ConfigurationError, "PGQ_SCHEMA"),
    ("settings not Settings", lambda q: pgq.connect(settings="pgq"), pgq.ValidationError, "pgq.Settings"),
    ("settings and url", lambda q: pgq.connect(q.settings.database_url, settings=q.settings), pgq.ValidationError,
     "not both"),
]

ALL_CASES = ENQUEUE_CASES + ENQUEUE_MANY_CASES + ID_CASES + TASK_CASES + WORKER_CASES + CONNECT_CASES


@pytest.mark.parametrize(("call", "error", "says"), [c[1:] for c in ALL_CASES], ids=[c[0] for c in ALL_CASES])
def test_python_api_refuses_bad_input_and_changes_nothing(
    shared: tuple[pgq.Queue, psycopg.Connection[Any]], call: Callable[[pgq.Queue], Any], error: type[Exception],
    says: str,
) -> None:
    q, conn = shared
    tasks = dict(q.tasks)
    with unchanged(conn):
        with pytest.raises(error) as info:
            call(q)
    assert says.lower() in str(info.value).lower(), str(info.value)
    assert isinstance(info.value, pgq.PgqError)
    assert q.tasks == tasks  # a refused @task registers nothing


def test_operations_on_jobs_in_the_wrong_status_change_nothing(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    done = factories.insert_job(conn, task="matrix.task", status="completed")
    dead = factories.insert_job(conn, task="matrix.task", status="dead")
    queued = factories.insert_job(conn, task="matrix.task")
    with unchanged(conn):
        for job_id in (done, dead):
            with pytest.raises(pgq.InvalidTransition, match=str(job_id)):
                q.cancel(job_id)
        with pytest.raises(pgq.InvalidTransition, match="not dead"):
            q.requeue_dead([dead, queued])  # one bad id: nothing is requeued
        assert q.purge_dead([queued, done, 987_654]) == []  # purge deletes only dead jobs; others are left alone
        with pytest.raises(pgq.JobFailed):
            q.wait(dead, timeout=1)
    assert q.cancel(queued) is True
    assert q.cancel(queued) is False  # already cancelled: no error, no change
    with pytest.raises(pgq.JobFailed, match="cancelled"):
        q.wait(queued, timeout=1)


def test_a_string_that_merely_spells_an_escaped_nul_is_stored(q: pgq.Queue) -> None:
    # Found by the bad-input matrix: "\\u0000" (backslash, u, 0000) is ordinary text.
    text = "C:\\u0000\\dir"
    job_id = q.enqueue("matrix.task", {text: text})
    assert q.get(job_id).payload == {text: text}


# ---------------------------------------------------------------- the pgq command


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, db_url: str) -> CliRunner:
    monkeypatch.setenv("PGQ_DATABASE_URL", db_url)
    monkeypatch.delenv("PGQ_SCHEMA", raising=False)
    return CliRunner()


CLI_CASES = [
    (["dlq", "list", "--queue", INJECTION], 2, "queue name"),
    (["dlq", "list", "--limit", "0"], 2, "limit"),
    (["dlq", "list", "--limit", "many"], 2, "limit"),
    (["dlq", "requeue"], 2, "job ids"),
    (["dlq", "requeue", "0"], 2, "JOB_IDS"),
    (["dlq", "requeue", "abc"], 2, "JOB_IDS"),
    (["dlq", "requeue", "99999999999999999999"], 2, "job id"),
    (["dlq", "requeue", "987654"], 1, "does not exist"),
    (["dlq", "requeue", "--all", "--queue", "a b"], 2, "queue name"),
    (["dlq", "requeue", "5", "--all"], 2, "not both"),
    (["dlq", "requeue", "5", "--cluster", "5"], 2, "--cluster ID alone"),
    (["dlq", "requeue", "--cluster", "987654"], 2, "no dead letter cluster 987654"),
    (["dlq", "clusters", "--threshold", "0"], 2, "threshold"),
    (["dlq", "clusters", "--threshold", "1.5"], 2, "threshold"),
    (["similar"], 2, "JOB_ID or --text"),
    (["similar", "0"], 2, "JOB_ID"),
    (["similar", "5", "-k", "0"], 2, "-k"),
    (["dlq", "purge", "--all", "--older-than", "-1", "--yes"], 2, "older-than"),
    (["dlq", "purge", "--all", "--older-than", "nan", "--yes"], 2, "older_than"),
    (["dlq", "purge", "--all", "--older-than", "inf", "--yes"], 2, "older_than"),
    (["dlq", "purge", "--all"], 1, "Aborted"),  # no --yes, no confirmation on stdin
    (["--schema", "pgq; DROP SCHEMA pgq CASCADE", "status"], 2, "PGQ_SCHEMA"),
    (["--schema", "Pgq", "dlq", "list"], 2, "PGQ_SCHEMA"),
    (["--schema", "not_migrated", "status"], 1, "pgq migrate"),
    (["worker", "nowhere:q", "--concurrency", "0"], 2, "concurrency"),
    (["worker", "no_such_module_xyz:q"], 2, "cannot import"),
    (["status", "--jsn"], 2, "--jsn"),
]


@pytest.mark.parametrize(("args", "code", "says"), CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_cli_refuses_bad_input_with_exit_code_and_reason(
    runner: CliRunner, conn: psycopg.Connection[Any], args: list[str], code: int, says: str,
) -> None:
    queued = factories.insert_job(conn)
    factories.insert_job(conn, status="dead")
    with unchanged(conn):
        result = runner.invoke(main, args)
    assert result.exit_code == code, result.output
    assert says.lower() in result.output.lower(), result.output
    assert "Traceback" not in result.output
    assert factories.job(conn, queued)["status"] == "queued"


# ---------------------------------------------------------------- stored functions from SQL

# SQLSTATEs a caller of the stored functions may see; each is documented in db/README.md.
EXPECTED_PGQ_ERROR = {
    "PQ001": pgq.JobNotFound, "PQ002": pgq.InvalidTransition, "PQ004": pgq.ValidationError,
    "PQ005": pgq.WorkerDraining,
    "23514": pgq.ValidationError, "23502": pgq.ValidationError, "22P02": pgq.ValidationError,
    "22008": pgq.ValidationError, "22P05": pgq.ValidationError, "22021": pgq.ValidationError,
    "54000": pgq.ValidationError,
}

W = uuid.UUID("00000000-0000-4000-8000-0000000000aa")  # an active worker (see the fixture below)
STOPPED = uuid.UUID("00000000-0000-4000-8000-0000000000bb")
NOBODY = uuid.UUID("00000000-0000-4000-8000-0000000000cc")
DRAINING = uuid.UUID("00000000-0000-4000-8000-0000000000dd")
NINE_MIB = "jsonb_build_object('a', repeat('x', 9 * 1024 * 1024))"

# (id, statement, parameters, SQLSTATE, words of the message). {running},
# {completed}, {dead} are ids of jobs in that status, filled in by the test.
SQL_CASES: list[tuple[str, str, tuple[Any, ...], str, str]] = [
    # enqueue_job
    ("enqueue_job NULL task", "SELECT pgq.enqueue_job(NULL)", (), "23502", "task"),
    ("enqueue_job bad task", "SELECT pgq.enqueue_job(%s)", (INJECTION,), "23514", "jobs_task_name"),
    ("enqueue_job task newline", "SELECT pgq.enqueue_job(%s)", ("t\n",), "23514", "jobs_task_name"),
    ("enqueue_job NUL task", "SELECT pgq.enqueue_job('a' || chr(0))", (), "54000", "null character"),
    ("enqueue_job not UTF-8", "SELECT pgq.enqueue_job(convert_from('\\xff'::bytea, 'UTF8'))", (), "22021", "UTF8"),
    ("enqueue_job array payload", "SELECT pgq.enqueue_job('t', '[1]')", (), "23514", "jobs_payload_object"),
    ("enqueue_job NUL payload", "SELECT pgq.enqueue_job('t', %s::jsonb)", ('{"a": "\\u0000"}',), "22P05",
     "unicode escape"),
    ("enqueue_job not JSON", "SELECT pgq.enqueue_job('t', %s::jsonb)", ("{'a': 1}",), "22P02", "json"),
    ("enqueue_job payload 9 MiB", f"SELECT pgq.enqueue_job('t', {NINE_MIB})", (), "23514", "jobs_payload_size"),
    ("enqueue_job bad queue", "SELECT pgq.enqueue_job('t', '{}', %s)", (INJECTION,), "23514", "jobs_queue_name"),
    ("enqueue_job priority 0", "SELECT pgq.enqueue_job('t', p_priority => 0)", (), "23514", "jobs_priority_range"),
    ("enqueue_job priority big", "SELECT pgq.enqueue_job('t', p_priority => 99999)", (), "22003", "out of range"),
    ("enqueue_job delay < 0", "SELECT pgq.enqueue_job('t', p_delay => '-1 s')", (), "PQ004", "p_delay"),
    ("enqueue_job delay huge", "SELECT pgq.enqueue_job('t', p_delay => '300000 years')", (), "22008", "out of range"),
    ("enqueue_job run_at infinity", "SELECT pgq.enqueue_job('t', p_run_at => 'infinity')", (), "23514",
     "jobs_run_at_finite"),
    ("enqueue_job max_attempts 0", "SELECT pgq.enqueue_job('t', p_max_attempts => 0)", (), "23514", "max_attempts"),
    ("enqueue_job timeout < 0", "SELECT pgq.enqueue_job('t', p_timeout => '-1 s')", (), "23514", "timeout"),
    ("enqueue_job empty key", "SELECT pgq.enqueue_job('t', p_unique_key => '')", (), "23514", "unique_key"),
    # enqueue_jobs
    ("enqueue_jobs arrays differ", "SELECT * FROM pgq.enqueue_jobs('{a,b}', '{\"{}\"}')", (), "PQ004", "elements"),
    ("enqueue_jobs NaN backoff",
     "SELECT * FROM pgq.enqueue_jobs('{t}', '{\"{}\"}', '{q}', '{1}', '{NULL}', '{1}', '{NULL}', '{NULL}',"
     " '{NaN}', '{NULL}', '{NaN}', '{NULL}')", (), "23514", "jobs_retry_finite"),
    ("enqueue_jobs infinite factor",
     "SELECT * FROM pgq.enqueue_jobs('{t}', '{\"{}\"}', '{q}', '{1}', '{NULL}', '{1}', '{NULL}', '{NULL}',"
     " '{NULL}', '{Infinity}', '{NULL}', '{NULL}')", (), "23514", "jobs_retry_finite"),
    ("enqueue_jobs NaN timeout",
     "SELECT * FROM pgq.enqueue_jobs('{t}', '{\"{}\"}', '{q}', '{1}', '{NULL}', '{1}', '{NaN}', '{NULL}',"
     " '{NULL}', '{NULL}', '{NULL}', '{NULL}')", (), "22008", "out of range"),
    ("enqueue_jobs -infinity run_at",
     "SELECT * FROM pgq.enqueue_jobs('{t}', '{\"{}\"}', '{q}', '{1}', '{-infinity}', '{1}', '{NULL}', '{NULL}',"
     " '{NULL}', '{NULL}', '{NULL}', '{NULL}')", (), "23514", "jobs_run_at_finite"),
    ("enqueue_jobs one bad of two",
     "SELECT * FROM pgq.enqueue_jobs('{ok,\"bad task\"}', '{\"{}\",\"{}\"}', '{q,q}', '{1,1}', '{NULL,NULL}',"
     " '{1,1}', '{NULL,NULL}', '{NULL,NULL}', '{NULL,NULL}', '{NULL,NULL}', '{NULL,NULL}', '{NULL,NULL}')", (),
     "23514", "jobs_task_name"),
    # cancel_job
    ("cancel_job NULL", "SELECT pgq.cancel_job(NULL)", (), "PQ001", "does not exist"),
    ("cancel_job unknown", "SELECT pgq.cancel_job(987654)", (), "PQ001", "987654"),
    ("cancel_job negative", "SELECT pgq.cancel_job(-1)", (), "PQ001", "does not exist"),
    ("cancel_job completed", "SELECT pgq.cancel_job({completed})", (), "PQ002", "completed"),
    ("cancel_job dead", "SELECT pgq.cancel_job({dead})", (), "PQ002", "dead"),
    ("cancel_job not a number", "SELECT pgq.cancel_job(%s::bigint)", ("1; DROP TABLE pgq.jobs",), "22P02", "bigint"),
    # complete_jobs / fail_job / release_jobs
    ("complete_jobs lengths", "SELECT * FROM pgq.complete_jobs(%s, '{1,2}', '{1}')", (W,), "PQ004", "same length"),
    ("complete_jobs results length", "SELECT * FROM pgq.complete_jobs(%s, '{1}', '{1}', '{}')", (W,), "PQ004",
     "same length"),
    ("fail_job outcome", "SELECT pgq.fail_job({running}, %s, 1, 'E', 'm', p_outcome => 'lost')", (W,), "PQ004",
     "p_outcome"),
    ("fail_job outcome unknown", "SELECT pgq.fail_job({running}, %s, 1, 'E', 'm', p_outcome => 'bogus')", (W,),
     "22P02", "attempt_outcome"),
    ("fail_job delay < 0", "SELECT pgq.fail_job({running}, %s, 1, 'E', 'm', p_retry_delay => -1)", (W,), "PQ004", "p_retry_delay"),
    ("fail_job delay NaN", "SELECT pgq.fail_job({running}, %s, 1, 'E', 'm', p_retry_delay => 'NaN')", (W,), "PQ004", "p_retry_delay"),
    ("fail_job delay inf", "SELECT pgq.fail_job({running}, %s, 1, 'E', 'm', p_retry_delay => 'Infinity')", (W,), "PQ004",
     "p_retry_delay"),
    ("fail_job delay 10 years", "SELECT pgq.fail_job({running}, %s, 1, 'E', 'm', p_retry_delay => 315360000)", (W,), "PQ004",
     "p_retry_delay"),
    ("fail_job NUL message", "SELECT pgq.fail_job({running}, %s, 1, 'E', 'm' || chr(0))", (W,), "54000",
     "null character"),
    ("release_jobs lengths", "SELECT * FROM pgq.release_jobs(%s, '{1}', '{1,2}')", (W,), "PQ004", "same length"),
    # requeue / purge / prune
    ("requeue unknown", "SELECT * FROM pgq.requeue_dead_jobs('{987654}')", (), "PQ001", "987654"),
    ("requeue NULL id", "SELECT * FROM pgq.requeue_dead_jobs('{NULL}')", (), "PQ001", "does not exist"),
    ("requeue not dead", "SELECT * FROM pgq.requeue_dead_jobs(ARRAY[{dead}, {completed}])", (), "PQ002", "not dead"),
    ("purge older_than < 0", "SELECT * FROM pgq.purge_dead_jobs(NULL, '-1 s')", (), "PQ004", "p_older_than"),
    ("purge older_than NULL", "SELECT * FROM pgq.purge_dead_jobs(NULL, NULL)", (), "PQ004", "p_older_than"),
    ("prune NULL", "SELECT pgq.prune_jobs(NULL)", (), "PQ004", "p_older_than"),
    ("prune negative", "SELECT pgq.prune_jobs('-1 s')", (), "PQ004", "p_older_than"),
    ("prune limit 0", "SELECT pgq.prune_jobs('1 s', 0)", (), "PQ004", "p_limit"),
    ("prune_workers NULL", "SELECT pgq.prune_workers(NULL)", (), "PQ004", "p_older_than"),
    ("prune_workers negative", "SELECT pgq.prune_workers('-1 s')", (), "PQ004", "p_older_than"),
    ("prune_workers limit 0", "SELECT pgq.prune_workers('1 s', 0)", (), "PQ004", "p_limit"),
    # workers
    ("register NULL id", "SELECT pgq.register_worker(NULL, 'h', 1, '{q}')", (), "23502", "id"),
    ("register NULL host", "SELECT pgq.register_worker(gen_random_uuid(), NULL, 1, '{q}')", (), "23502", "hostname"),
    ("register no queues", "SELECT pgq.register_worker(gen_random_uuid(), 'h', 1, '{}')", (), "23514",
     "workers_queues_nonempty"),
    ("register bad queue", "SELECT pgq.register_worker(gen_random_uuid(), 'h', 1, ARRAY[%s])", (INJECTION,),
     "23514", "workers_queue_names"),
    ("register NULL queue", "SELECT pgq.register_worker(gen_random_uuid(), 'h', 1, '{q,NULL}')", (), "23514",
     "workers_queue_names"),
    ("register comma queue", "SELECT pgq.register_worker(gen_random_uuid(), 'h', 1, ARRAY['a,b'])", (), "23514",
     "workers_queue_names"),
    ("register capacity 0", "SELECT pgq.register_worker(gen_random_uuid(), 'h', 1, '{q}', 0)", (), "23514",
     "capacity"),
    ("register metadata array", "SELECT pgq.register_worker(gen_random_uuid(), 'h', 1, '{q}', 1, '[1]')", (),
     "23514", "workers_metadata_object"),
    ("register not a uuid", "SELECT pgq.register_worker(%s::uuid, 'h', 1, '{q}')", ("' OR 1=1 --",), "22P02",
     "uuid"),
    ("heartbeat unknown", "SELECT * FROM pgq.heartbeat_worker(%s)", (NOBODY,), "PQ002", "not registered"),
    ("heartbeat stopped", "SELECT * FROM pgq.heartbeat_worker(%s)", (STOPPED,), "PQ002", "stopped"),
    ("heartbeat health 2", "SELECT * FROM pgq.heartbeat_worker(%s, 0, '{}', 2.0)", (W,), "23514", "health"),
    ("deregister unknown", "SELECT pgq.deregister_worker(%s)", (NOBODY,), "PQ002", "not registered"),
    ("stale NULL", "SELECT * FROM pgq.mark_stale_workers(NULL)", (), "PQ004", "positive"),
    ("stale zero", "SELECT * FROM pgq.mark_stale_workers('0 s')", (), "PQ004", "positive"),
    ("timeouts negative", "SELECT * FROM pgq.fail_timed_out_jobs('-1 s')", (), "PQ004", "p_grace"),
    ("timeouts NULL", "SELECT * FROM pgq.fail_timed_out_jobs(NULL)", (), "PQ004", "p_grace"),
    ("claim NULL queues", "SELECT * FROM pgq.get_runnable_jobs(NULL, %s, 1)", (W,), "PQ004", "p_queues"),
    ("claim no queues", "SELECT * FROM pgq.get_runnable_jobs('{}', %s, 1)", (W,), "PQ004", "p_queues"),
    ("claim zero", "SELECT * FROM pgq.get_runnable_jobs('{default}', %s, 0)", (W,), "PQ004", "p_max_jobs"),
    ("claim too many", "SELECT * FROM pgq.get_runnable_jobs('{default}', %s, %s::int)", (W, 99999999999), "22003",
     "out of range"),
    ("claim unregistered", "SELECT * FROM pgq.get_runnable_jobs('{default}', %s, 1)", (NOBODY,), "PQ002",
     "not registered"),
    ("claim stopped", "SELECT * FROM pgq.get_runnable_jobs('{default}', %s, 1)", (STOPPED,), "PQ002", "stopped"),
    ("claim draining", "SELECT * FROM pgq.get_runnable_jobs('{default}', %s, 1)", (DRAINING,), "PQ005", "draining"),
    # revision 0006: claims with positions, the heartbeat with the watermark, drain_worker
    ("claim_v2 draining", "SELECT * FROM pgq.get_runnable_jobs_v2('{default}', %s, 1, 0, 0)", (DRAINING,), "PQ005",
     "draining"),
    ("claim_v2 negative base", "SELECT * FROM pgq.get_runnable_jobs_v2('{default}', %s, 1, -1, 0)", (W,), "PQ004",
     "p_position_base"),
    ("claim_v2 negative watermark", "SELECT * FROM pgq.get_runnable_jobs_v2('{default}', %s, 1, 0, -1)", (W,),
     "PQ004", "p_started_through"),
    ("claim_v2 zero", "SELECT * FROM pgq.get_runnable_jobs_v2('{default}', %s, 0, 0, 0)", (W,), "PQ004",
     "p_max_jobs"),
    ("claim_jobs_v2 NULL ids", "SELECT * FROM pgq.claim_jobs_v2(NULL, %s, 0, 0)", (W,), "PQ004", "p_job_ids"),
    ("claim_jobs_v2 draining", "SELECT * FROM pgq.claim_jobs_v2('{1}', %s, 0, 0)", (DRAINING,), "PQ005",
     "draining"),
    ("claim_jobs_v2 unregistered", "SELECT * FROM pgq.claim_jobs_v2('{1}', %s, 0, 0)", (NOBODY,), "PQ002",
     "not registered"),
    ("heartbeat_v2 negative watermark", "SELECT * FROM pgq.heartbeat_worker_v2(%s, 0, '{}', -1)", (W,), "PQ004",
     "p_started_through"),
    ("heartbeat_v2 stopped", "SELECT * FROM pgq.heartbeat_worker_v2(%s)", (STOPPED,), "PQ002", "stopped"),
    ("drain unknown", "SELECT pgq.drain_worker(%s)", (NOBODY,), "PQ002", "not registered"),
    ("drain stopped", "SELECT pgq.drain_worker(%s)", (STOPPED,), "PQ002", "stopped"),
]
EXPECTED_PGQ_ERROR["22003"] = pgq.ValidationError  # numeric_value_out_of_range


def fill(statement: str, ids: dict[str, int]) -> str:
    """Put the seeded job ids in place of {running}, {completed}, ... (SQL has braces of its own)."""
    for name, job_id in ids.items():
        statement = statement.replace("{" + name + "}", str(job_id))
    return statement


@pytest.fixture
def seeded(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Jobs in several statuses and two workers, for the functions to (not) touch."""
    factories.insert_worker(conn, worker_id=W)
    factories.insert_worker(conn, worker_id=STOPPED, status="stopped")
    factories.insert_worker(conn, worker_id=DRAINING, status="draining")
    return {
        "running": factories.insert_job(conn, status="running", worker_id=W),
        "completed": factories.insert_job(conn, status="completed"),
        "dead": factories.insert_job(conn, status="dead"),
        "queued": factories.insert_job(conn),
    }


@pytest.mark.parametrize(("statement", "params", "sqlstate", "says"), [c[1:] for c in SQL_CASES],
                         ids=[c[0] for c in SQL_CASES])
def test_stored_functions_refuse_bad_input_with_a_documented_sqlstate(
    conn: psycopg.Connection[Any], seeded: dict[str, int], statement: str, params: tuple[Any, ...], sqlstate: str,
    says: str,
) -> None:
    with unchanged(conn), factories.raises_sqlstate(sqlstate) as info:
        conn.execute(fill(statement, seeded), params)
    error = translate(info.value)
    assert says.lower() in (str(error) + str(info.value)).lower(), str(info.value)
    assert type(error) is EXPECTED_PGQ_ERROR[sqlstate]


def test_every_sqlstate_of_the_matrix_is_documented() -> None:
    documented = set(re.findall(r"^\| `([0-9A-Z]{5})` \|", (sql_dir() / "README.md").read_text(), re.MULTILINE))
    assert {c[3] for c in SQL_CASES} <= documented
    assert set(EXPECTED_PGQ_ERROR) <= documented


# The fenced outcome functions answer "stale" instead of raising (README, DBA
# section): a late report from a worker that lost its claim is normal.
FENCED_CASES = [
    ("complete unknown job", "SELECT count(*) FROM pgq.complete_jobs(%s, '{987654}', '{1}')", (W,), (0,)),
    ("complete queued job", "SELECT count(*) FROM pgq.complete_jobs(%s, ARRAY[{queued}], '{0}')", (W,), (0,)),
    ("complete other worker", "SELECT count(*) FROM pgq.complete_jobs(%s, ARRAY[{running}], '{1}')", (NOBODY,), (0,)),
    ("complete wrong attempt", "SELECT count(*) FROM pgq.complete_jobs(%s, ARRAY[{running}], '{7}')", (W,), (0,)),
    ("complete NULLs", "SELECT count(*) FROM pgq.complete_jobs(NULL, NULL, NULL)", (), (0,)),
    ("fail unknown job", "SELECT pgq.fail_job(987654, %s, 1, 'E', 'm')", (W,), (False,)),
    ("fail completed job", "SELECT pgq.fail_job({completed}, %s, 1, 'E', 'm')", (W,), (False,)),
    ("fail other worker", "SELECT pgq.fail_job({running}, %s, 1, 'E', 'm')", (NOBODY,), (False,)),
    ("fail NULLs", "SELECT pgq.fail_job(NULL, NULL, NULL, NULL, NULL)", (), (False,)),
    ("release queued job", "SELECT count(*) FROM pgq.release_jobs(%s, ARRAY[{queued}], '{0}')", (W,), (0,)),
    ("purge unknown", "SELECT count(*) FROM pgq.purge_dead_jobs('{987654}')", (), (0,)),
    ("purge not dead", "SELECT count(*) FROM pgq.purge_dead_jobs(ARRAY[{queued}, {completed}])", (), (0,)),
    ("claim bad queue name", "SELECT count(*) FROM pgq.get_runnable_jobs(ARRAY[%s], %s, 5)", (INJECTION, W), (0,)),
]


@pytest.mark.parametrize(("statement", "params", "answer"), [c[1:] for c in FENCED_CASES],
                         ids=[c[0] for c in FENCED_CASES])
def test_fenced_functions_answer_stale_and_change_nothing(
    conn: psycopg.Connection[Any], seeded: dict[str, int], statement: str, params: tuple[Any, ...],
    answer: tuple[Any, ...],
) -> None:
    with unchanged(conn):
        assert conn.execute(fill(statement, seeded), params).fetchone() == answer
