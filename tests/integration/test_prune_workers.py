"""pgq.prune_workers: the rows of workers stopped or stale for longer than the retention are deleted."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest

import factories
from factories import insert_job, insert_worker, raises_sqlstate

pytestmark = pytest.mark.integration

WEEK = dt.timedelta(days=7)


def prune(conn: psycopg.Connection[Any], older_than: dt.timedelta, limit: int, p_now: dt.datetime) -> int:
    row = conn.execute("SELECT pgq.prune_workers(%s, %s, %s)", (older_than, limit, p_now)).fetchone()
    assert row is not None
    return int(row[0])


def workers(conn: psycopg.Connection[Any]) -> set[Any]:
    return {r[0] for r in conn.execute("SELECT id FROM pgq.workers").fetchall()}


def test_deletes_stopped_and_stale_workers_past_the_retention_only(conn, now):
    old = now - WEEK - dt.timedelta(seconds=1)
    gone = {insert_worker(conn, status="stopped", last_heartbeat=old),
            insert_worker(conn, status="stale", last_heartbeat=old)}
    kept = {
        insert_worker(conn, status="stopped", last_heartbeat=now - WEEK),  # exactly at the limit
        insert_worker(conn, status="stopped", last_heartbeat=old, stopped_at=now - dt.timedelta(days=1)),
        insert_worker(conn, status="active", last_heartbeat=old),  # not marked stale yet: maintenance's job
        insert_worker(conn, status="draining", last_heartbeat=old),
    }
    # A stale worker that still owns a running job (it was claimed after the sweep) stays.
    owner = insert_worker(conn, status="stale", last_heartbeat=old)
    insert_job(conn, status="running", worker_id=owner)
    kept.add(owner)

    assert prune(conn, WEEK, 100, now) == 2

    assert workers(conn) == kept
    assert not gone & workers(conn)


def test_deletes_at_most_limit_oldest_first(conn, now):
    ids = [insert_worker(conn, status="stopped", last_heartbeat=now - dt.timedelta(days=30 - i)) for i in range(5)]

    assert prune(conn, WEEK, 2, now) == 2
    assert workers(conn) == set(ids[2:])
    assert prune(conn, WEEK, 10, now) == 3
    assert workers(conn) == set()


def test_nothing_to_prune_changes_nothing(conn, now):
    insert_worker(conn, status="stopped")
    before = factories.snapshot(conn)
    assert prune(conn, WEEK, 10, now) == 0
    assert factories.snapshot(conn) == before


def test_a_worker_row_locked_by_its_heartbeat_is_skipped(conn, connect, now):
    worker_id = insert_worker(conn, status="stale", last_heartbeat=now - 2 * WEEK)
    other = connect(autocommit=False)
    other.execute("SELECT 1 FROM pgq.workers WHERE id = %s FOR UPDATE", (worker_id,))  # a heartbeat in progress
    try:
        assert prune(conn, WEEK, 10, now) == 0
    finally:
        other.rollback()
    assert prune(conn, WEEK, 10, now) == 1


def test_bad_arguments_are_rejected(conn, now):
    for older_than, limit in ((dt.timedelta(seconds=-1), 10), (WEEK, 0), (None, 10), (WEEK, None)):
        with raises_sqlstate("PQ004"):
            prune(conn, older_than, limit, now)
