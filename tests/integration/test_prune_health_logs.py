"""pgq.prune_health_logs (revision 0008): old health samples are deleted in batches."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest

import factories
from factories import insert_worker, raises_sqlstate

pytestmark = pytest.mark.integration


def add_samples(conn: psycopg.Connection[Any], worker: Any, at: dt.datetime, n: int) -> None:
    conn.execute(
        "INSERT INTO pgq.worker_health_logs (worker_id, metric_type, metric_value, logged_at, jobs_completed)"
        " SELECT %s, 'heartbeat', 1, %s - make_interval(secs => i), i FROM generate_series(1, %s) AS i",
        (worker, at, n))


def remaining(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM pgq.worker_health_logs").fetchone()
    assert row is not None
    return int(row[0])


def test_deletes_only_samples_older_than_the_retention_in_batches(conn: psycopg.Connection[Any],
                                                                  now: dt.datetime) -> None:
    worker = insert_worker(conn)
    add_samples(conn, worker, now - dt.timedelta(days=2), 25)  # old
    add_samples(conn, worker, now, 10)  # the last 10 seconds
    deleted = [conn.execute("SELECT pgq.prune_health_logs(interval '1 day', 10, %s)", (now,)).fetchone()
               for _ in range(4)]
    assert deleted == [(10,), (10,), (5,), (0,)]
    assert remaining(conn) == 10


@pytest.mark.parametrize(("older_than", "limit"), [("-1 second", 10), (None, 10), ("1 day", 0), ("1 day", None)])
def test_bad_arguments_are_refused_and_change_nothing(conn: psycopg.Connection[Any], now: dt.datetime,
                                                      older_than: str | None, limit: int | None) -> None:
    add_samples(conn, insert_worker(conn), now - dt.timedelta(days=2), 3)
    before = factories.snapshot(conn)
    with raises_sqlstate("PQ004"):
        conn.execute("SELECT pgq.prune_health_logs(%s::interval, %s::int)", (older_than, limit))
    assert factories.snapshot(conn) == before
