"""pgq.set_worker_stuck_handlers (revision 0007) and the worker_status column it feeds."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest

import factories
from factories import insert_worker, raises_sqlstate

pytestmark = pytest.mark.integration


def test_records_the_count_and_the_view_shows_it(conn: psycopg.Connection[Any], now: dt.datetime) -> None:
    worker_id = insert_worker(conn)
    other = insert_worker(conn)
    conn.execute("SELECT pgq.set_worker_stuck_handlers(%s, 3, %s)", (worker_id, now + dt.timedelta(seconds=5)))
    w = factories.worker(conn, worker_id)
    assert (w["stuck_handlers"], w["updated_at"]) == (3, now + dt.timedelta(seconds=5))
    rows = dict(conn.execute("SELECT id, stuck_handlers FROM pgq.worker_status").fetchall())
    assert rows == {worker_id: 3, other: 0}
    conn.execute("SELECT pgq.set_worker_stuck_handlers(%s, 0)", (worker_id,))
    assert factories.worker(conn, worker_id)["stuck_handlers"] == 0


def test_a_stopped_worker_may_still_record_what_it_left_behind(conn: psycopg.Connection[Any]) -> None:
    worker_id = insert_worker(conn, status="stopped")
    conn.execute("SELECT pgq.set_worker_stuck_handlers(%s, 1)", (worker_id,))
    assert factories.worker(conn, worker_id)["stuck_handlers"] == 1


@pytest.mark.parametrize("count", [-1, None])
def test_a_negative_or_missing_count_is_refused_and_changes_nothing(conn: psycopg.Connection[Any],
                                                                    count: int | None) -> None:
    worker_id = insert_worker(conn)
    before = factories.snapshot(conn)
    with raises_sqlstate("PQ004", match="p_stuck_handlers"):
        conn.execute("SELECT pgq.set_worker_stuck_handlers(%s, %s::int)", (worker_id, count))
    assert factories.snapshot(conn) == before


def test_an_unknown_worker_is_refused(conn: psycopg.Connection[Any]) -> None:
    before = factories.snapshot(conn)
    with raises_sqlstate("PQ002", match="not registered"):
        conn.execute("SELECT pgq.set_worker_stuck_handlers(%s, 1)", (uuid.uuid4(),))
    assert factories.snapshot(conn) == before


def test_the_column_refuses_a_negative_count_written_by_hand(conn: psycopg.Connection[Any]) -> None:
    worker_id = insert_worker(conn)
    with raises_sqlstate("23514", match="workers_stuck_handlers_nonnegative"):
        conn.execute("UPDATE pgq.workers SET stuck_handlers = -1 WHERE id = %s", (worker_id,))
