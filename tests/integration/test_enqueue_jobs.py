"""pgq.enqueue_jobs (batch) and pgq.enqueue_job (its psql-friendly wrapper): (new) -> queued."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

import factories
from factories import insert_job, raises_sqlstate

pytestmark = pytest.mark.integration

ARRAYS = ("queues", "priorities", "run_at", "max_attempts", "timeout_seconds", "unique_keys",
          "retry_base", "retry_factor", "retry_max", "retry_jitter")
CASTS = ("text[]", "int[]", "timestamptz[]", "int[]", "float8[]", "text[]", "float8[]", "float8[]", "float8[]",
         "float8[]")


def enqueue_many(
    conn: psycopg.Connection[Any], tasks: list[str], payloads: list[Any] | None = None,
    p_now: dt.datetime | None = None, **arrays: list[Any] | None,
) -> list[tuple[int, int, bool]]:
    unknown = set(arrays) - set(ARRAYS)
    assert not unknown, unknown
    payloads = payloads if payloads is not None else [{} for _ in tasks]
    placeholders = ", ".join(f"%s::{cast}" for cast in CASTS)
    rows = conn.execute(
        f"SELECT ord, job_id, created FROM pgq.enqueue_jobs(%s::text[], %s::jsonb[], {placeholders},"
        " coalesce(%s::timestamptz, now()))",
        [tasks, [None if p is None else Jsonb(p) for p in payloads], *(arrays.get(a) for a in ARRAYS), p_now],
    ).fetchall()
    return [(int(r[0]), int(r[1]), bool(r[2])) for r in rows]


def enqueue_one(conn: psycopg.Connection[Any], task: str = "send_email", **kwargs: Any) -> int:
    names = ", ".join(f"p_{k} => %s" for k in kwargs)
    values = [Jsonb(v) if k == "payload" else v for k, v in kwargs.items()]
    row = conn.execute(f"SELECT pgq.enqueue_job(%s{', ' if kwargs else ''}{names})", [task, *values]).fetchone()
    assert row is not None
    return int(row[0])


# ---------------------------------------------------------------- enqueue_job


def test_enqueue_job_defaults(conn, now):
    job_id = enqueue_one(conn, payload={"to": "a@b.c"}, now=now)

    row = factories.job(conn, job_id)
    assert (row["task"], row["payload"], row["queue"], row["priority"]) == ("send_email", {"to": "a@b.c"}, "default", 3)
    assert (row["status"], row["attempts"], row["max_attempts"]) == ("queued", 0, 3)
    assert (row["run_at"], row["created_at"], row["updated_at"]) == (now, now, now)
    assert (row["timeout"], row["unique_key"], row["worker_id"], row["started_at"]) == (None, None, None, None)
    assert row["retry_base_seconds"] is None and row["retry_jitter"] is None


def test_enqueue_job_stores_every_argument(conn, now):
    job_id = enqueue_one(conn, task="report", payload={}, queue="reports", priority=5, max_attempts=7,
                         timeout=dt.timedelta(seconds=90), unique_key="report:1", now=now)

    row = factories.job(conn, job_id)
    assert (row["queue"], row["priority"], row["max_attempts"]) == ("reports", 5, 7)
    assert (row["timeout"], row["unique_key"]) == (dt.timedelta(seconds=90), "report:1")


def test_enqueue_job_delay_and_run_at(conn, now):
    delayed = enqueue_one(conn, delay=dt.timedelta(seconds=45), now=now)
    scheduled = enqueue_one(conn, run_at=now + dt.timedelta(hours=2), delay=dt.timedelta(seconds=45), now=now)

    assert factories.job(conn, delayed)["run_at"] == now + dt.timedelta(seconds=45)
    assert factories.job(conn, scheduled)["run_at"] == now + dt.timedelta(hours=2)  # run_at wins


def test_enqueue_job_rejects_a_negative_delay(conn):
    with raises_sqlstate("PQ004"):
        enqueue_one(conn, delay=dt.timedelta(seconds=-1))
    assert factories.table_counts(conn)["jobs"] == 0


def test_enqueue_job_with_a_live_unique_key_returns_the_live_job(conn):
    first = enqueue_one(conn, unique_key="welcome:42")
    second = enqueue_one(conn, unique_key="welcome:42", priority=5)

    assert second == first
    assert factories.table_counts(conn)["jobs"] == 1
    assert factories.job(conn, first)["priority"] == 3


def test_unique_key_of_a_live_job_is_taken(conn):
    for status in ("waiting", "queued", "running", "retrying"):
        live = insert_job(conn, status=status, unique_key=f"key-{status}")
        count = factories.table_counts(conn)["jobs"]

        assert enqueue_one(conn, unique_key=f"key-{status}") == live, status
        assert factories.table_counts(conn)["jobs"] == count, status


def test_unique_key_of_a_finished_job_is_free_again(conn):
    for status in ("completed", "dead", "cancelled"):
        finished = insert_job(conn, status=status, unique_key=f"key-{status}")

        new = enqueue_one(conn, unique_key=f"key-{status}")

        assert new != finished, status
        assert factories.job(conn, new)["status"] == "queued", status


# ---------------------------------------------------------------- enqueue_jobs


def test_batch_returns_one_row_per_input_in_input_order(conn, now):
    rows = enqueue_many(conn, ["a", "b", "c"], [{"i": 1}, {"i": 2}, {"i": 3}], p_now=now,
                        queues=["q1", "q2", "q1"], priorities=[1, 5, 3])

    assert [r[0] for r in rows] == [1, 2, 3]
    assert all(created for _, _, created in rows)
    ids = [r[1] for r in rows]
    assert ids == sorted(ids) and len(set(ids)) == 3  # ids grow in enqueue order
    stored = [factories.job(conn, i) for i in ids]
    assert [(s["task"], s["payload"], s["queue"], s["priority"]) for s in stored] == [
        ("a", {"i": 1}, "q1", 1), ("b", {"i": 2}, "q2", 5), ("c", {"i": 3}, "q1", 3)]


def test_batch_null_elements_take_the_defaults(conn, now):
    rows = enqueue_many(conn, ["a", "b"], [None, {"x": 1}], p_now=now,
                        queues=[None, "q"], priorities=[None, 4], run_at=[None, now + dt.timedelta(seconds=5)],
                        max_attempts=[None, 9], timeout_seconds=[None, 2.5], retry_base=[None, 3.0],
                        retry_factor=[None, 1.5], retry_max=[None, 60.0], retry_jitter=[None, 0.25])

    a, b = (factories.job(conn, r[1]) for r in rows)
    assert (a["payload"], a["queue"], a["priority"], a["run_at"], a["max_attempts"], a["timeout"]) == (
        {}, "default", 3, now, 3, None)
    assert (b["queue"], b["priority"], b["run_at"], b["max_attempts"], b["timeout"]) == (
        "q", 4, now + dt.timedelta(seconds=5), 9, dt.timedelta(seconds=2.5))
    assert (b["retry_base_seconds"], b["retry_factor"], b["retry_max_seconds"], b["retry_jitter"]) == (
        3.0, 1.5, 60.0, 0.25)
    assert (a["retry_base_seconds"], a["retry_factor"], a["retry_max_seconds"], a["retry_jitter"]) == (
        None, None, None, None)


def test_batch_dedupes_unique_keys_within_the_batch_and_against_live_jobs(conn):
    live = insert_job(conn, unique_key="taken")

    rows = enqueue_many(conn, ["t"] * 5, unique_keys=["x", "taken", "x", None, None])

    (o1, x1, c1), (o2, j2, c2), (o3, x3, c3), (_, n1, c4), (_, n2, c5) = rows
    assert (o1, o2, o3) == (1, 2, 3)
    assert (c1, c2, c3, c4, c5) == (True, False, False, True, True)
    assert j2 == live
    assert x3 == x1
    assert len({x1, n1, n2, live}) == 4
    assert factories.table_counts(conn)["jobs"] == 4


def test_empty_batch_inserts_nothing(conn):
    assert enqueue_many(conn, []) == []
    assert factories.table_counts(conn)["jobs"] == 0


def test_arrays_of_different_lengths_are_rejected(conn):
    with raises_sqlstate("PQ004"):
        enqueue_many(conn, ["a", "b"], [{}, {}], queues=["q"])
    with raises_sqlstate("PQ004"):
        enqueue_many(conn, ["a", "b"], [{}])
    assert factories.table_counts(conn)["jobs"] == 0


# (array, bad value, constraint that must reject it)
BAD_VALUES = [
    ("priorities", 0, "jobs_priority_range"),
    ("priorities", 6, "jobs_priority_range"),
    ("queues", "", "jobs_queue_name"),
    ("queues", "has space", "jobs_queue_name"),
    ("queues", "-starts-with-dash", "jobs_queue_name"),
    ("queues", "q" * 101, "jobs_queue_name"),
    ("max_attempts", 0, "jobs_max_attempts_positive"),
    ("timeout_seconds", 0.0, "jobs_timeout_positive"),
    ("timeout_seconds", -1.0, "jobs_timeout_positive"),
    ("unique_keys", "", "jobs_unique_key_length"),
    ("unique_keys", "k" * 201, "jobs_unique_key_length"),
    ("retry_base", 0.0, "jobs_retry_base_positive"),
    ("retry_factor", 0.5, "jobs_retry_factor_range"),
    ("retry_jitter", 1.0, "jobs_retry_jitter_range"),
    ("retry_jitter", -0.1, "jobs_retry_jitter_range"),
    ("retry_max", 0.5, "jobs_retry_max_range"),  # below retry_base, which is 1.0 in this case
]


def test_check_constraints_reject_bad_values_and_the_whole_batch(conn):
    # Every case runs in this one database: a rejected batch leaves nothing behind.
    for field, value, constraint in BAD_VALUES:
        good = {"queues": "ok", "priorities": 3, "max_attempts": 3, "timeout_seconds": None, "unique_keys": None,
                "retry_base": 1.0 if field == "retry_max" else None, "retry_factor": None, "retry_max": None,
                "retry_jitter": None}
        arrays = {name: [v, value if name == field else v] for name, v in good.items()}

        with raises_sqlstate("23514") as info:
            enqueue_many(conn, ["fine", "bad"], **arrays)

        assert info.value.diag.constraint_name == constraint, (field, value)
        assert factories.table_counts(conn)["jobs"] == 0, (field, value)


def test_check_constraints_reject_bad_tasks_and_payloads(conn):
    for task, payload, constraint in [
        ("", {}, "jobs_task_name"),
        ("9starts_with_digit", {}, "jobs_task_name"),
        ("t" * 201, {}, "jobs_task_name"),
        ("ok", [1, 2], "jobs_payload_object"),
        ("ok", "text", "jobs_payload_object"),
    ]:
        with raises_sqlstate("23514") as info:
            enqueue_many(conn, ["fine", task], [{}, payload])
        assert info.value.diag.constraint_name == constraint, (task, payload)
    assert factories.table_counts(conn)["jobs"] == 0


def test_enqueue_job_reports_constraint_violations_too(conn):
    for priority in (0, 6):
        with raises_sqlstate("23514"):
            enqueue_one(conn, priority=priority)
    assert factories.table_counts(conn)["jobs"] == 0


def test_batch_insert_notifies_each_queue_once(conn, drain_notifications):
    drain_notifications()

    enqueue_many(conn, ["t"] * 6, queues=["a", "b", "a", "a", "b", "c"])

    assert sorted(drain_notifications()) == [("pgq_job_available", q) for q in ("a", "b", "c")]
