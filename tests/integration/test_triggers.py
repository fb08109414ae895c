"""Triggers: updated_at maintenance (jobs, workers) and NOTIFY on new runnable work."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
from psycopg import sql

import factories
from factories import insert_job, insert_worker

pytestmark = pytest.mark.integration

HOUR = dt.timedelta(hours=1)


# ---------------------------------------------------------------- set_updated_at


def test_manual_update_of_a_job_refreshes_updated_at(conn, now):
    job_id = insert_job(conn, updated_at=now - HOUR)

    with conn.transaction():
        conn.execute("UPDATE pgq.jobs SET priority = 5 WHERE id = %s", (job_id,))
        transaction_time = factories.db_now(conn)

    assert factories.job(conn, job_id)["updated_at"] == transaction_time
    assert transaction_time > now - HOUR


def test_update_that_sets_updated_at_itself_keeps_its_value(conn, now):
    job_id = insert_job(conn, updated_at=now - HOUR)
    chosen = now - dt.timedelta(minutes=5)

    conn.execute("UPDATE pgq.jobs SET priority = 5, updated_at = %s WHERE id = %s", (chosen, job_id))

    assert factories.job(conn, job_id)["updated_at"] == chosen


def test_manual_update_of_a_worker_refreshes_updated_at(conn, now):
    worker_id = insert_worker(conn)
    conn.execute("UPDATE pgq.workers SET updated_at = %s WHERE id = %s", (now - HOUR, worker_id))

    with conn.transaction():
        conn.execute("UPDATE pgq.workers SET capacity = 9 WHERE id = %s", (worker_id,))
        transaction_time = factories.db_now(conn)

    assert factories.worker(conn, worker_id)["updated_at"] == transaction_time


# ---------------------------------------------------------------- notify_job_available


def listen(conn: psycopg.Connection[Any], channel: str) -> None:
    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))


def test_multi_row_insert_in_one_transaction_notifies_each_queue_exactly_once(connect, conn):
    listener = connect()
    listen(listener, "pgq_job_available")
    listen(listener, "pgq_test_end")
    queues = ["emails", "reports", "default"]

    with conn.transaction():
        for queue in queues:  # several statements ...
            factories.insert_jobs(conn, 50, queue=queue)
        factories.insert_jobs(conn, 50, queue="emails")  # ... and a queue twice
        conn.execute("SELECT pgq.enqueue_job('t', p_queue => 'reports')")
    # Sent after the commit, so delivered after everything the transaction sent.
    conn.execute("NOTIFY pgq_test_end, 'end'")

    notes = list(listener.notifies(timeout=10, stop_after=len(queues) + 1))

    assert (notes[-1].channel, notes[-1].payload) == ("pgq_test_end", "end")
    assert sorted((n.channel, n.payload) for n in notes[:-1]) == sorted(("pgq_job_available", q) for q in queues)


def test_delayed_and_not_runnable_jobs_do_not_notify(conn, now, drain_notifications):
    drain_notifications()

    factories.insert_jobs(conn, 3, queue="later", run_at=now + HOUR)
    insert_job(conn, status="running", queue="busy")
    insert_job(conn, status="completed", queue="done")
    insert_job(conn, status="waiting", queue="blocked")
    insert_job(conn, status="retrying", queue="retry_later", run_at=now + HOUR)
    insert_job(conn, status="retrying", queue="retry_now", run_at=now - HOUR)

    assert drain_notifications() == [("pgq_job_available", "retry_now")]


def test_rolled_back_insert_sends_nothing(connect, conn, drain_notifications):
    drain_notifications()
    writer = connect(autocommit=False)

    factories.insert_jobs(writer, 5, queue="emails")
    writer.rollback()

    assert drain_notifications() == []
    assert factories.table_counts(conn)["jobs"] == 0


def test_notification_is_delivered_only_at_commit(connect, conn):
    listener = connect()
    listen(listener, "pgq_job_available")
    writer = connect(autocommit=False)

    factories.insert_jobs(writer, 2, queue="emails")
    assert factories.drain_notifications(listener, conn) == []
    writer.commit()

    assert factories.drain_notifications(listener, conn) == [("pgq_job_available", "emails")]


def test_a_worker_woken_by_the_notification_finds_the_job(connect, conn):
    listener = connect()
    listen(listener, "pgq_job_available")
    worker_id = insert_worker(conn, queues=["emails"])

    job_id = conn.execute("SELECT pgq.enqueue_job('send', p_queue => 'emails')").fetchone()[0]
    [note] = listener.notifies(timeout=10, stop_after=1)
    claimed = listener.execute("SELECT id FROM pgq.get_runnable_jobs(ARRAY[%s], %s, 1)",
                               (note.payload, worker_id)).fetchall()

    assert claimed == [(job_id,)]
