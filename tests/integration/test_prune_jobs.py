"""pgq.prune_jobs: completed | cancelled -> (deleted) after the retention period, in batches."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest

import factories
from factories import insert_dead_letter, insert_execution, insert_job, raises_sqlstate

pytestmark = pytest.mark.integration

WEEK = dt.timedelta(days=7)


def prune(conn: psycopg.Connection[Any], older_than: dt.timedelta, limit: int, p_now: dt.datetime) -> int:
    row = conn.execute("SELECT pgq.prune_jobs(%s, %s, %s)", (older_than, limit, p_now)).fetchone()
    assert row is not None
    return int(row[0])


def remaining(conn: psycopg.Connection[Any]) -> set[int]:
    return {int(r[0]) for r in conn.execute("SELECT id FROM pgq.jobs").fetchall()}


def test_prunes_finished_jobs_past_retention_with_their_history(conn, now):
    old = now - WEEK - dt.timedelta(seconds=1)
    completed = insert_job(conn, status="completed", finished_at=old)
    cancelled = insert_job(conn, status="cancelled", finished_at=old)
    insert_execution(conn, completed, attempt=1, outcome="completed")
    # A completed job that had been requeued from the dead letter queue once.
    insert_dead_letter(conn, completed)
    conn.execute("UPDATE pgq.dead_letter_queue SET requeued_at = %s", (old,))
    child = insert_job(conn)
    conn.execute("INSERT INTO pgq.job_dependencies (parent_id, child_id) VALUES (%s, %s)", (completed, child))
    kept = {
        insert_job(conn, status="completed", finished_at=now - WEEK),  # exactly at the limit
        insert_job(conn, status="completed", finished_at=now - dt.timedelta(days=1)),
        insert_job(conn, status="dead", finished_at=old),  # dead jobs wait for purge_dead_jobs
        insert_job(conn, status="queued", created_at=old),
        insert_job(conn, status="running", started_at=old),
        insert_job(conn, status="retrying", created_at=old),
        child,
    }

    assert prune(conn, WEEK, 100, now) == 2

    assert remaining(conn) == kept
    counts = factories.table_counts(conn)
    assert (counts["job_executions"], counts["dead_letter_queue"], counts["job_dependencies"]) == (0, 0, 0)
    assert cancelled not in remaining(conn)


def test_prunes_at_most_limit_oldest_first(conn, now):
    ids = [insert_job(conn, status="completed", finished_at=now - dt.timedelta(days=30 - i)) for i in range(5)]

    assert prune(conn, WEEK, 2, now) == 2
    assert remaining(conn) == set(ids[2:])
    assert prune(conn, WEEK, 2, now) == 2
    assert prune(conn, WEEK, 2, now) == 1
    assert prune(conn, WEEK, 2, now) == 0
    assert remaining(conn) == set()


def test_nothing_to_prune_changes_nothing(conn, now):
    insert_job(conn, status="completed", finished_at=now)
    before = factories.snapshot(conn)

    assert prune(conn, WEEK, 10, now) == 0
    assert factories.snapshot(conn) == before


def test_bad_arguments_are_rejected(conn, now):
    for older_than, limit in ((dt.timedelta(seconds=-1), 10), (WEEK, 0)):
        with raises_sqlstate("PQ004"):
            prune(conn, older_than, limit, now)
