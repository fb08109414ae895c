"""The three enqueue paths (single INSERT, COPY, the enqueue_jobs() function)
must leave identical rows: the same columns from the same specs, run_at from
the database clock, and one NOTIFY per queue per transaction."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest

import pgq
from pgq.operations import run
from pgq.job import JobSpec
from pgq.queries import Queries
from tests.factories import drain_notifications

pytestmark = pytest.mark.integration

COLUMNS = ("task", "payload", "queue", "priority", "status", "attempts", "max_attempts", "timeout",
           "retry_base_seconds", "retry_factor", "retry_max_seconds", "retry_jitter", "unique_key", "worker_id")

FIXED_RUN_AT = dt.datetime(2031, 5, 6, 7, 8, 9, tzinfo=dt.UTC)


def build(task: str, payload: dict[str, Any] | None = None, **options: Any) -> JobSpec:
    options.setdefault("queue", "default")
    return JobSpec.build(task, payload, **options)


def specs() -> list[JobSpec]:
    """One spec per interesting combination of options (no unique keys: those take the function path)."""
    return [
        build("plain"),
        build("with.payload", {"to": "a@b.c", "text": "tab\there, newline\nthere, back\\slash, 'quote'"}),
        build("other.queue", queue="emails", priority=5),
        build("delayed", delay=3600),
        build("scheduled", run_at=FIXED_RUN_AT),
        build("options", max_attempts=7, timeout=12.5, priority=1,
                      backoff=pgq.Backoff(base=2, factor=3, max=100, jitter=0.25)),
    ]


def rows(conn: psycopg.Connection[Any], ids: list[int]) -> list[dict[str, Any]]:
    found = []
    for job_id in ids:
        cur = conn.execute(
            f"SELECT {', '.join(COLUMNS)}, run_at - created_at AS run_offset, run_at, created_at, updated_at"
            " FROM pgq.jobs WHERE id = %s", (job_id,))
        names = [c.name for c in cur.description or []]
        row = cur.fetchone()
        assert row is not None, f"job {job_id} missing"
        found.append(dict(zip(names, row, strict=True)))
    return found


def comparable(row: dict[str, Any]) -> dict[str, Any]:
    """A row without its times; run_at is kept as an offset from created_at
    (or absolute, for a job scheduled at a fixed time)."""
    out = {k: row[k] for k in COLUMNS}
    out["run_at"] = row["run_at"] if row["task"] == "scheduled" else row["run_offset"]
    return out


def test_copy_and_single_insert_leave_the_rows_the_function_leaves(conn: psycopg.Connection[Any]) -> None:
    queries = Queries("pgq")
    by_function = [job_id for job_id, _ in run(conn, queries._enqueue_by_function(specs()))]
    by_copy = [job_id for job_id, _ in queries.enqueue_jobs(conn, specs())]
    one_by_one = [queries.enqueue_jobs(conn, [spec])[0][0] for spec in specs()]

    expected = [comparable(r) for r in rows(conn, by_function)]
    assert [comparable(r) for r in rows(conn, by_copy)] == expected
    assert [comparable(r) for r in rows(conn, one_by_one)] == expected
    # Sanity of the reference itself, against the specs (not against pgq's output).
    assert [r["task"] for r in expected] == [s.task for s in specs()]
    assert expected[3]["run_at"] == dt.timedelta(hours=1)
    assert expected[4]["run_at"] == FIXED_RUN_AT
    assert expected[5]["timeout"] == dt.timedelta(seconds=12.5)
    assert expected[1]["payload"]["text"] == "tab\there, newline\nthere, back\\slash, 'quote'"


def test_copy_returns_ids_in_input_order_and_times_from_the_database(conn: psycopg.Connection[Any]) -> None:
    queries = Queries("pgq")
    before = conn.execute("SELECT clock_timestamp()").fetchone()
    batch = [build("t", {"n": n}) for n in range(500)]
    result = queries.enqueue_jobs(conn, batch)
    after = conn.execute("SELECT clock_timestamp()").fetchone()
    assert before is not None and after is not None
    ids = [job_id for job_id, created in result]
    assert all(created for _, created in result)
    assert ids == sorted(ids) and len(set(ids)) == 500
    stored = dict(conn.execute("SELECT id, (payload->>'n')::int FROM pgq.jobs WHERE id = ANY(%s)", (ids,)).fetchall())
    assert [stored[i] for i in ids] == list(range(500))
    times = conn.execute("SELECT min(created_at), max(created_at), count(DISTINCT run_at),"
                         " bool_and(run_at = created_at AND updated_at = created_at)"
                         " FROM pgq.jobs WHERE id = ANY(%s)", (ids,)).fetchone()
    assert times is not None
    # One transaction: one timestamp for the whole batch, between the two readings.
    assert before[0] <= times[0] == times[1] <= after[0]
    assert times[2] == 1 and times[3] is True


def test_copy_sends_one_notification_per_queue(conn: psycopg.Connection[Any], connect: Any) -> None:
    listener = connect()
    listener.execute("LISTEN pgq_job_available")
    Queries("pgq").enqueue_jobs(conn, [build("t", queue=q) for q in ["a", "b", "a", "a", "b"]]
                                + [build("t", queue="later", delay=60)])
    notes = drain_notifications(listener, conn)
    assert sorted(notes) == [("pgq_job_available", "a"), ("pgq_job_available", "b")]


def test_a_failed_copy_writes_nothing(conn: psycopg.Connection[Any]) -> None:
    # A spec that passed Python validation but breaks a database rule midway
    # (forged here: JobSpec.build would refuse it) rolls the whole batch back.
    good = [build("t") for _ in range(10)]
    bad = build("t")
    object.__setattr__(bad, "priority", 9)
    with pytest.raises(psycopg.errors.CheckViolation):
        Queries("pgq").enqueue_jobs(conn, [*good, bad, *good])
    row = conn.execute("SELECT count(*) FROM pgq.jobs").fetchone()
    assert row is not None and row[0] == 0


def test_transactional_copy_exists_only_if_the_caller_commits(db_url: str) -> None:
    queries = Queries("pgq")
    with psycopg.connect(db_url) as caller:  # not autocommit: the caller's transaction
        queries.enqueue_jobs(caller, [build("t") for _ in range(5)])
        caller.rollback()
        queries.enqueue_jobs(caller, [build("t") for _ in range(3)])
        caller.commit()
        row = caller.execute("SELECT count(*) FROM pgq.jobs").fetchone()
    assert row is not None and row[0] == 3
