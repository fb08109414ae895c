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


def many_dead_jobs(conn: psycopg.Connection[Any], count: int) -> None:
    conn.execute("INSERT INTO pgq.jobs (task, status, attempts, max_attempts, finished_at)"
                 " SELECT 't', 'dead', 1, 1, now() - g * interval '1 ms' FROM generate_series(1, %s) AS g",
                 (count,))
    conn.execute("INSERT INTO pgq.dead_letter_queue (job_id, queue, task, reason)"
                 " SELECT id, queue, task, 'exhausted' FROM pgq.jobs WHERE status = 'dead'")


def test_one_call_purges_at_most_ten_thousand_oldest_first(conn):
    # Issue 9: one call used to delete every dead job in one transaction.
    many_dead_jobs(conn, 10_003)
    now = factories.db_now(conn)
    oldest = [r[0] for r in conn.execute(
        "SELECT id FROM pgq.jobs ORDER BY finished_at LIMIT 10000").fetchall()]

    first = purge(conn, None, dt.timedelta(0), now)

    assert first == sorted(oldest)
    assert factories.table_counts(conn)["dead_letter_queue"] == 3
    assert len(purge(conn, None, dt.timedelta(0), now)) == 3


def test_purge_dead_purges_everything_in_bounded_batches(conn, settings):
    import pgq

    many_dead_jobs(conn, 10_006)
    named = [r[0] for r in conn.execute("SELECT id FROM pgq.jobs ORDER BY id LIMIT 3").fetchall()]
    with pgq.connect(settings=settings) as q:
        assert sorted(q.purge_dead(named)) == named
        assert len(q.purge_dead()) == 10_003  # two calls: 10,000, then 3
    counts = factories.table_counts(conn)
    assert (counts["jobs"], counts["dead_letter_queue"]) == (0, 0)


def test_purge_dead_of_more_than_a_batch_of_named_ids(conn, settings):
    import pgq

    many_dead_jobs(conn, 10_002)
    ids = sorted(r[0] for r in conn.execute("SELECT id FROM pgq.jobs").fetchall())
    with pgq.connect(settings=settings) as q:
        assert sorted(q.purge_dead(ids)) == ids  # two calls of at most 10,000 ids
    assert factories.table_counts(conn)["jobs"] == 0
