"""pgq.evacuate_worker: drain_worker plus the reason, recorded; bad input changes nothing."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest

import factories
from factories import insert_worker, raises_sqlstate

pytestmark = pytest.mark.integration

EVACUATION = ("status", "drain_requested_at", "evacuated_at", "evacuation_reason", "evacuated_by")


def evacuate(conn: psycopg.Connection[Any], worker_id: uuid.UUID, reason: str | None = "score 0.1",
             source: str | None = "operator", p_now: dt.datetime | None = None) -> bool:
    row = conn.execute("SELECT pgq.evacuate_worker(%s, %s, %s, coalesce(%s::timestamptz, now()))",
                       (worker_id, reason, source, p_now)).fetchone()
    assert row is not None
    return bool(row[0])


def state(conn: psycopg.Connection[Any], worker_id: uuid.UUID) -> tuple[Any, ...]:
    w = factories.worker(conn, worker_id)
    return tuple(w[k] for k in EVACUATION)


def test_evacuate_worker_marks_an_active_worker_draining_with_its_reason_and_notifies_it(
        conn: psycopg.Connection[Any], connect: Any) -> None:
    worker_id = insert_worker(conn)
    listener = connect()
    listener.execute("LISTEN pgq_worker_draining")
    now = dt.datetime(2026, 12, 3, 6, 0, tzinfo=dt.UTC)
    assert evacuate(conn, worker_id, "disk failing", "operator", now) is True
    assert state(conn, worker_id) == ("draining", now, now, "disk failing", "operator")
    heard = [(n.channel, n.payload) for n in listener.notifies(timeout=5, stop_after=1)]
    assert heard == [("pgq_worker_draining", str(worker_id))]


def test_evacuate_worker_is_idempotent_and_keeps_the_first_reason(conn: psycopg.Connection[Any]) -> None:
    worker_id = insert_worker(conn)
    now = dt.datetime(2026, 12, 3, 6, 0, tzinfo=dt.UTC)
    assert evacuate(conn, worker_id, "first", "worker", now) is True
    assert evacuate(conn, worker_id, "second", "operator", now + dt.timedelta(seconds=5)) is False
    assert state(conn, worker_id) == ("draining", now, now, "first", "worker")


def test_evacuating_a_draining_worker_turns_its_drain_into_an_evacuation(conn: psycopg.Connection[Any]) -> None:
    worker_id = insert_worker(conn)
    asked = dt.datetime(2026, 12, 3, 6, 0, tzinfo=dt.UTC)
    conn.execute("SELECT pgq.drain_worker(%s, %s)", (worker_id, asked))
    later = asked + dt.timedelta(seconds=3)
    assert evacuate(conn, worker_id, "score 0.2", "worker", later) is True
    assert state(conn, worker_id) == ("draining", asked, later, "score 0.2", "worker")


def test_a_stale_worker_may_be_evacuated_and_stays_stale(conn: psycopg.Connection[Any]) -> None:
    worker_id = insert_worker(conn, status="stale")
    assert evacuate(conn, worker_id) is True
    assert state(conn, worker_id)[0] == "stale"
    # It comes back draining (register_worker keeps a requested drain).
    conn.execute("SELECT pgq.register_worker(%s, 'h', 1, '{default}', 1)", (worker_id,))
    assert state(conn, worker_id)[0] == "draining"


def test_an_evacuation_of_a_previous_life_does_not_count(conn: psycopg.Connection[Any]) -> None:
    worker_id = insert_worker(conn)
    first = dt.datetime(2026, 12, 3, 6, 0, tzinfo=dt.UTC)
    evacuate(conn, worker_id, "old", p_now=first)
    conn.execute("SELECT pgq.deregister_worker(%s)", (worker_id,))
    conn.execute("SELECT pgq.register_worker(%s, 'h', 1, '{default}', 1)", (worker_id,))  # a new life
    conn.execute("SELECT pgq.drain_worker(%s, %s)", (worker_id, first + dt.timedelta(hours=1)))
    assert conn.execute("SELECT evacuation_reason FROM pgq.workers WHERE id = %s AND evacuated_at >= "
                        "drain_requested_at", (worker_id,)).fetchall() == []
    assert evacuate(conn, worker_id, "new", p_now=first + dt.timedelta(hours=2)) is True
    assert state(conn, worker_id)[3] == "new"


@pytest.mark.parametrize(("reason", "source"), [
    (None, "operator"), ("", "operator"), ("   ", "operator"), ("x" * 501, "operator"),
    ("why", "robot"), ("why", None),
])
def test_evacuate_worker_refuses_bad_input_with_pq004_and_changes_nothing(
        conn: psycopg.Connection[Any], reason: str | None, source: str | None) -> None:
    worker_id = insert_worker(conn)
    before = state(conn, worker_id)
    with raises_sqlstate("PQ004"):
        evacuate(conn, worker_id, reason, source)
    assert state(conn, worker_id) == before == ("active", None, None, None, None)


def test_evacuate_worker_refuses_a_null_time(conn: psycopg.Connection[Any]) -> None:
    worker_id = insert_worker(conn)
    with raises_sqlstate("PQ004"):
        conn.execute("SELECT pgq.evacuate_worker(%s, 'why', 'operator', NULL)", (worker_id,))
    assert state(conn, worker_id)[0] == "active"


@pytest.mark.parametrize("status", ["stopped", None])
def test_evacuate_worker_refuses_a_stopped_or_unknown_worker_with_pq002(
        conn: psycopg.Connection[Any], status: str | None) -> None:
    worker_id = insert_worker(conn, status=status) if status else uuid.uuid4()
    with raises_sqlstate("PQ002"):
        evacuate(conn, worker_id)
    if status:
        assert state(conn, worker_id) == ("stopped", None, None, None, None)
