"""SQL is never built from input strings: injection through every string argument.

Every string a caller controls (task, queue and unique-key names, payload keys
and values, error types, messages and tracebacks, results, worker host names
and metadata, schema names) is pushed through the Python API, the command and
the stored functions with SQL metacharacters in it. Names are refused by their
rules; everything else must be stored verbatim, and nothing beyond the intended
rows may change: a canary table survives, every other pgq row is untouched.

A static check completes the picture: the runtime SQL in ``pgq/queries/`` is
built once per schema from the quoted schema name, and takes everything else
as bound parameters.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy
from click.testing import CliRunner
from psycopg.types.json import Jsonb

import factories
import pgq
from pgq.cli import main

pytestmark = pytest.mark.integration

HOSTILE = [
    "'; DROP TABLE public.canary; --",
    '"; DROP TABLE public.canary; --',
    "x' OR '1'='1",
    "'); DELETE FROM pgq.jobs; --",
    "Robert'); DROP TABLE Students;--",
    "$$; DROP TABLE public.canary; $$",
    "$q$ || (SELECT pg_terminate_backend(pg_backend_pid())) || $q$",
    "\\'; TRUNCATE public.canary; --",
    "'||(SELECT string_agg(rolname, ',') FROM pg_roles)||'",
    "1; SELECT pg_sleep(30)",
    "%s %s %(x)s {s} {0} $1",
    "E'\\x27' /* */ -- ",
    "\u2019; DROP TABLE public.canary; --",
    'NOTIFY pgq_job_available, \'default\'',
    '"pgq"."jobs"',
    "\n; UPDATE pgq.jobs SET status = 'completed'; \r\n",
]


@pytest.fixture
def canary(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """A table no pgq call has any business touching; it must survive every test."""
    conn.execute("CREATE TABLE public.canary (id int PRIMARY KEY, note text NOT NULL)")
    conn.execute("INSERT INTO public.canary VALUES (1, 'alive')")
    yield
    assert conn.execute("SELECT id, note FROM public.canary").fetchall() == [(1, "alive")]
    assert conn.execute("SELECT to_regclass('pgq.jobs') IS NOT NULL").fetchone() == (True,)


@pytest.fixture
def q(settings: pgq.Settings) -> Iterator[pgq.Queue]:
    queue = pgq.connect(settings=settings, strict_tasks=False)
    yield queue
    queue.close()


def test_payloads_and_unique_keys_are_stored_verbatim_on_every_enqueue_path(
    q: pgq.Queue, conn: psycopg.Connection[Any], canary: None, db_url: str,
) -> None:
    before = factories.table_counts(conn)
    expected: dict[int, tuple[dict[str, Any], str | None]] = {}
    engine = sqlalchemy.create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(db_url),
                                      poolclass=sqlalchemy.pool.NullPool)
    try:
        for n, text in enumerate(HOSTILE):
            payload = {text: text, "nested": [text, {text: None}]}
            # One job without a key: a single INSERT.
            expected[q.enqueue("inj.task", payload)] = (payload, None)
            # Several without keys: COPY.
            for job_id in q.enqueue_many([{"task": "inj.task", "payload": payload}] * 2):
                expected[job_id] = (payload, None)
            # With a key: the enqueue_jobs() function; and again, which finds the live job.
            keyed = q.enqueue("inj.task", payload, unique_key=text)
            assert q.enqueue("inj.task", {}, unique_key=text) == keyed
            expected[keyed] = (payload, text)
            # Inside the caller's SQLAlchemy transaction.
            with engine.begin() as sa_conn:
                in_tx = q.enqueue("inj.task", payload, unique_key=f"tx{n}:{text}"[:200], connection=sa_conn)
            expected[in_tx] = (payload, f"tx{n}:{text}"[:200])
    finally:
        engine.dispose()

    rows = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, payload, unique_key FROM pgq.jobs").fetchall()}
    assert rows == expected
    after = factories.table_counts(conn)
    assert after == {**before, "jobs": before["jobs"] + 5 * len(HOSTILE)}


@pytest.mark.parametrize("text", HOSTILE)
def test_names_with_sql_metacharacters_are_refused_everywhere(
    q: pgq.Queue, conn: psycopg.Connection[Any], canary: None, text: str, monkeypatch: pytest.MonkeyPatch,
    db_url: str,
) -> None:
    before = factories.snapshot(conn)
    refusals = [
        lambda: q.enqueue(text),
        lambda: q.enqueue("inj.task", queue=text),
        lambda: q.enqueue_many([{"task": "inj.task", "queue": text}]),
        lambda: q.dead_letters(queue=text),
        lambda: q.requeue_dead(queue=text),
        lambda: q.worker(queues=[text]),
        lambda: q.task(name=text)(lambda: None),
        lambda: q.task(name="inj.other", queue=text)(lambda: None),
    ]
    for refuse in refusals:
        with pytest.raises(pgq.ValidationError):
            refuse()
    for bad_settings in ({"schema": text}, {"default_queue": text}):
        with pytest.raises(pgq.ConfigurationError):
            pgq.connect(db_url, **bad_settings)
    monkeypatch.setenv("PGQ_DATABASE_URL", db_url)
    runner = CliRunner()
    for args in (["dlq", "list", "--queue", text], ["--schema", text, "status"],
                 ["dlq", "requeue", "--all", "--queue", text]):
        result = runner.invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
    assert factories.snapshot(conn) == before


def test_errors_tracebacks_and_results_from_handlers_are_stored_verbatim(
    q: pgq.Queue, conn: psycopg.Connection[Any], canary: None,
) -> None:
    texts = {n: text for n, text in enumerate(HOSTILE)}

    @q.task(name="inj.fail", max_attempts=2)
    def fail(n: int) -> None:
        # A class whose very name is hostile: it is stored as the error type.
        raise type(texts[n], (Exception,), {})(texts[n])

    @q.task(name="inj.fatal")
    def fatal(n: int) -> None:
        raise pgq.Fatal(texts[n])

    @q.task(name="inj.echo")
    def echo(n: int) -> dict[str, str]:
        return {texts[n]: texts[n]}

    jobs = {name: {n: q.enqueue(name, {"n": n}) for n in texts} for name in ("inj.fail", "inj.fatal", "inj.echo")}
    worker = q.worker(queues=["default"], concurrency=3 * len(texts), install_signal_handlers=False,
                      run_maintenance=False)
    assert worker.run_once() == 3 * len(texts)

    for n, text in texts.items():
        failed = factories.job(conn, jobs["inj.fail"][n])
        assert failed["status"] == "retrying" and failed["last_error"] == f"{text}: {text}"
        (attempt,) = factories.executions(conn, jobs["inj.fail"][n])
        assert (attempt["error_type"], attempt["error_message"]) == (text, text)
        assert text in attempt["traceback"]
        dead = factories.job(conn, jobs["inj.fatal"][n])
        assert dead["status"] == "dead"
        (letter,) = factories.dead_letters(conn, jobs["inj.fatal"][n])
        assert letter["last_error"].endswith(text)
        assert factories.job(conn, jobs["inj.echo"][n])["result"] == {text: text}
    assert factories.table_counts(conn)["jobs"] == 3 * len(texts)


def test_stored_functions_take_hostile_strings_as_data(conn: psycopg.Connection[Any], canary: None) -> None:
    worker_id = factories.insert_worker(conn, queues=["default"])
    for text in HOSTILE:
        before = factories.table_counts(conn)
        for statement, params in (("SELECT pgq.enqueue_job(%s)", (text,)),
                                  ("SELECT pgq.enqueue_job('t', '{}', %s)", (text,)),
                                  ("SELECT pgq.register_worker(gen_random_uuid(), 'h', 1, ARRAY[%s])", (text,))):
            with factories.raises_sqlstate("23514"):
                conn.execute(statement, params)
        assert factories.table_counts(conn) == before

        (job_id,) = conn.execute("SELECT pgq.enqueue_job('t', %s, p_unique_key => %s)",
                                 (Jsonb({text: text}), text)).fetchone()
        assert conn.execute("SELECT payload, unique_key FROM pgq.jobs WHERE id = %s", (job_id,)).fetchone() == (
            {text: text}, text)
        claimed = conn.execute("SELECT id, attempts FROM pgq.get_runnable_jobs('{default}', %s, 1)",
                               (worker_id,)).fetchall()
        assert claimed == [(job_id, 1)]
        assert conn.execute("SELECT pgq.fail_job(%s, %s, 1, %s, %s, %s, p_fatal => true)",
                            (job_id, worker_id, text, text, text)).fetchone() == (True,)
        (execution,) = factories.executions(conn, job_id)
        assert (execution["error_type"], execution["error_message"], execution["traceback"]) == (text, text, text)
        (letter,) = factories.dead_letters(conn, job_id)
        assert letter["last_error"] == f"{text}: {text}"

        host_id = conn.execute("SELECT gen_random_uuid()").fetchone()[0]
        conn.execute("SELECT pgq.register_worker(%s, %s, 1, '{default}', 1, %s)", (host_id, text, Jsonb({text: text})))
        registered = factories.worker(conn, host_id)
        assert (registered["hostname"], registered["metadata"]) == (text, {text: text})
        assert factories.table_counts(conn) == {**before, "jobs": before["jobs"] + 1, "workers": before["workers"] + 1,
                                                "job_executions": before["job_executions"] + 1,
                                                "dead_letter_queue": before["dead_letter_queue"] + 1}


# ---------------------------------------------------------------- static: how runtime SQL is built

SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|COPY|FROM|WHERE|LISTEN|NOTIFY)\b")
# Names that may appear inside SQL text: the schema quoted by psycopg (sql.Identifier),
# and the constant column list of a job.
# "columns": the COPY column lists, built from constant names by _copy_columns().
SAFE_IN_SQL = {"s", "_JOB_SELECT", "columns"}


def _sql_fstrings(path: Path) -> list[tuple[int, str]]:
    """(line, interpolated expression) of every f-string in ``path`` that contains SQL words."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
            if SQL_WORDS.search(text):
                found += [(node.lineno, ast.unparse(v.value)) for v in node.values if isinstance(v, ast.FormattedValue)]
    return found


# The modules that hold runtime statements: pgq/queries/, and health/queries.py (issue 11).
STATEMENT_MODULES = ["queries/*.py", "health/queries.py"]


def test_runtime_sql_interpolates_only_the_quoted_schema() -> None:
    package = Path(pgq.__file__).parent
    modules = sorted(path for pattern in STATEMENT_MODULES for path in package.glob(pattern))
    interpolated = [(path.name, line, expr) for path in modules for line, expr in _sql_fstrings(path)]
    assert interpolated, "the check found no SQL at all: it is looking in the wrong place"
    assert [(name, line, expr) for name, line, expr in interpolated if expr not in SAFE_IN_SQL] == []
    # ... and "s" is the schema quoted as an identifier, wherever it is assigned.
    trees = [ast.parse(path.read_text(encoding="utf-8")) for path in modules]
    assignments = [ast.unparse(node.value) for tree in trees for node in ast.walk(tree)
                   if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "s" for t in node.targets)]
    assert assignments and set(assignments) == {"quote_ident(schema)"}


# snapshots/queries.py (issue 12): the quoted schema, and column lists and status lists
# built from the constant names in pgq/snapshots/format.py.
# plan_select: the restore plan's SELECT, itself built from s, _LIVE and constants (used twice: plan, replan).
SNAPSHOT_SAFE_IN_SQL = {"s", "_LIVE", "INFO_COLUMNS", "assignments", "worker_values", "plan_select", "_cols(JOB_COLUMNS)",
                        "_cols(EDGE_COLUMNS)", "_cols(WORKER_COLUMNS)", "_cols(JOB_COLUMNS, 'r.')", "_cols(JOB_COLUMNS, 'j.')",
                        "_cols(EDGE_COLUMNS, 'd.')", "_cols(EDGE_COLUMNS, 'e.')"}


def test_snapshot_statements_interpolate_only_the_quoted_schema_and_constant_names() -> None:
    queries = Path(pgq.__file__).parent / "snapshots" / "queries.py"
    interpolated = _sql_fstrings(queries)
    assert interpolated, "the check found no SQL at all: it is looking in the wrong place"
    assert [(line, expr) for line, expr in interpolated if expr not in SNAPSHOT_SAFE_IN_SQL] == []
    tree = ast.parse(queries.read_text(encoding="utf-8"))
    assignments = [ast.unparse(node.value) for node in ast.walk(tree)
                   if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "s" for t in node.targets)]
    assert set(assignments) == {"quote_ident(schema)"}


def test_no_other_runtime_module_builds_sql_from_strings() -> None:
    package = Path(pgq.__file__).parent
    # Admin tools build DDL from the validated, quoted schema name; runtime modules build no SQL.
    admin = {"health/queries.py", "snapshots/queries.py", "migrate.py", "schema.py"}
    # Subpackages included (worker/, redis/): a runtime module anywhere in pgq builds no SQL
    # (queries/, health/queries.py and snapshots/queries.py are where it lives, checked above).
    offenders = {name: found for path in sorted(package.rglob("*.py"))
                 if (name := path.relative_to(package).as_posix()) not in admin and not name.startswith("queries/")
                 and (found := _sql_fstrings(path))}
    assert offenders == {}
