"""pgq.purge_dead_jobs: dead -> (deleted), with their dead letters and history."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest

import factories
from factories import insert_dead_letter, insert_execution, insert_job, raises_sqlstate

pytestmark = pytest.mark.integration


def purge(conn: psycopg.Connection[Any], job_ids: list[int] | None, older_than: dt.timedelta,
          p_now: dt.datetime) -> list[int]:
    rows = conn.execute("SELECT * FROM pgq.purge_dead_jobs(%s::bigint[], %s, %s)",
                        (job_ids, older_than, p_now)).fetchall()
    return sorted(int(r[0]) for r in rows)


def dead_job(conn: psycopg.Connection[Any], finished_at: dt.datetime) -> int:
    job_id = insert_job(conn, status="dead", finished_at=finished_at)
    insert_execution(conn, job_id, attempt=1)
    insert_dead_letter(conn, job_id)
    return job_id


def test_purges_every_dead_job_with_its_dead_letter_and_history(conn, now):
    dead = [dead_job(conn, now - dt.timedelta(minutes=i)) for i in range(3)]
    alive = {insert_job(conn, status=s) for s in ("queued", "running", "completed", "cancelled", "retrying")}

    assert purge(conn, None, dt.timedelta(0), now) == sorted(dead)

    assert {int(r[0]) for r in conn.execute("SELECT id FROM pgq.jobs").fetchall()} == alive
    counts = factories.table_counts(conn)
    assert (counts["dead_letter_queue"], counts["job_executions"]) == (0, 0)


def test_purges_only_the_named_dead_jobs(conn, now):
    first, second = dead_job(conn, now), dead_job(conn, now)
    completed = insert_job(conn, status="completed")

    assert purge(conn, [first, completed, 10_000_001], dt.timedelta(0), now) == [first]
    assert factories.statuses(conn, [first, second, completed]) == {second: "dead", completed: "completed"}
    assert len(factories.dead_letters(conn, second)) == 1


def test_purges_only_jobs_dead_for_longer_than_older_than(conn, now):
    old = dead_job(conn, now - dt.timedelta(days=31))
    at_limit = dead_job(conn, now - dt.timedelta(days=30))
    recent = dead_job(conn, now - dt.timedelta(days=1))

    assert purge(conn, None, dt.timedelta(days=30), now) == sorted([old, at_limit])
    assert factories.statuses(conn, [recent]) == {recent: "dead"}


def test_nothing_to_purge_changes_nothing(conn, now):
    dead_job(conn, now)
    before = factories.snapshot(conn)

    assert purge(conn, None, dt.timedelta(hours=1), now) == []
    assert factories.snapshot(conn) == before


def test_negative_age_is_rejected(conn, now):
    with raises_sqlstate("PQ004"):
        purge(conn, None, dt.timedelta(seconds=-1), now)
