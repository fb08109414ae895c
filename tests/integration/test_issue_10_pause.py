"""Issue 10, pause and resume a queue (revision 0010).

A paused queue's jobs are left out of every claim function
(``get_runnable_jobs(_v2)``, ``claim_jobs(_v2)``: the shared
``lock_runnable_jobs`` / ``lock_runnable_jobs_by_id``); enqueue keeps working;
``paused_queues`` says since when and by whom. The guarantee against a claim in
flight, tested with two real connections: a claim that starts after the pause
commits takes nothing; a pause not yet committed stops nothing; a claim whose
statement ran before the commit keeps what it took.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

import factories
import pgq
from factories import insert_job, insert_worker, raises_sqlstate
from pgq.cli import main

pytestmark = pytest.mark.integration

Conn = psycopg.Connection[Any]


def claim_v2(conn: Conn, worker_id: uuid.UUID, queues: list[str], max_jobs: int = 10) -> list[int]:
    rows = conn.execute("SELECT id FROM pgq.get_runnable_jobs_v2(%s, %s, %s, 0, NULL)",
                        (queues, worker_id, max_jobs)).fetchall()
    return sorted(r[0] for r in rows)


def claim_by_id(conn: Conn, worker_id: uuid.UUID, ids: list[int]) -> list[int]:
    rows = conn.execute("SELECT id FROM pgq.claim_jobs_v2(%s::bigint[], %s, 0, NULL)", (ids, worker_id)).fetchall()
    return sorted(r[0] for r in rows)


def pauses(conn: Conn) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT queue, paused_by, paused_by_application, resumed_at IS NULL"
                        " FROM pgq.queue_pauses ORDER BY queue").fetchall()


# ---------------------------------------------------------------- the SQL functions


def test_pause_records_who_and_when_and_is_idempotent(connect: Callable[..., Conn], now: dt.datetime) -> None:
    conn = connect()
    conn.execute("SET application_name = 'ops-console'")
    assert conn.execute("SELECT pgq.pause_queue('emails', %s)", (now,)).fetchone() == (True,)
    assert conn.execute("SELECT pgq.pause_queue('emails', %s)", (now + dt.timedelta(hours=1),)).fetchone() == (False,)
    user = conn.execute("SELECT session_user").fetchone()
    assert user is not None
    rows = conn.execute("SELECT queue, paused_at, paused_by, paused_by_application, waiting_jobs"
                        " FROM pgq.paused_queues").fetchall()
    assert rows == [("emails", now, user[0], "ops-console", 0)]  # the first pause's time is kept

    assert conn.execute("SELECT pgq.resume_queue('emails')").fetchone() == (True,)
    assert conn.execute("SELECT pgq.resume_queue('emails')").fetchone() == (False,)
    assert conn.execute("SELECT count(*) FROM pgq.paused_queues").fetchone() == (0,)
    assert pauses(conn) == [("emails", user[0], "ops-console", False)]
    # Paused again: the row is taken over (resumed_at cleared).
    assert conn.execute("SELECT pgq.pause_queue('emails')").fetchone() == (True,)
    assert pauses(conn) == [("emails", user[0], "ops-console", True)]


def test_paused_queues_counts_the_jobs_waiting(conn: Conn) -> None:
    for status in ("queued", "retrying", "running", "completed"):
        insert_job(conn, queue="emails", status=status)
    conn.execute("SELECT pgq.pause_queue('emails')")
    assert conn.execute("SELECT waiting_jobs FROM pgq.paused_queues").fetchone() == (2,)


@pytest.mark.parametrize("name, sqlstate", [("bad name", "23514"), ("", "23514"), ("x" * 101, "23514"),
                                            (None, "PQ004")])
def test_pause_of_a_bad_name_raises_and_changes_nothing(conn: Conn, name: str | None, sqlstate: str) -> None:
    before = factories.snapshot(conn)
    with raises_sqlstate(sqlstate):
        conn.execute("SELECT pgq.pause_queue(%s)", (name,))
    with raises_sqlstate("PQ004"):
        conn.execute("SELECT pgq.resume_queue(NULL)")
    assert factories.snapshot(conn) == before
    assert pauses(conn) == []


# ---------------------------------------------------------------- claims leave paused queues out


def test_every_claim_function_leaves_a_paused_queue_out(conn: Conn) -> None:
    worker = insert_worker(conn, queues=["a", "b"])
    a = [insert_job(conn, queue="a") for _ in range(3)]
    b = [insert_job(conn, queue="b") for _ in range(3)]
    conn.execute("SELECT pgq.pause_queue('a')")

    assert claim_v2(conn, worker, ["a"]) == []
    assert conn.execute("SELECT count(*) FROM pgq.get_runnable_jobs(%s, %s, 10)", (["a"], worker)).fetchone() == (0,)
    assert claim_by_id(conn, worker, a) == []
    assert conn.execute("SELECT count(*) FROM pgq.claim_jobs(%s::bigint[], %s)", (a, worker)).fetchone() == (0,)
    # Several queues at once: the paused one is skipped, the other claimed.
    assert claim_v2(conn, worker, ["a", "b"], max_jobs=2) == b[:2]
    assert claim_by_id(conn, worker, a + b[2:]) == b[2:]
    assert factories.statuses(conn, a) == {i: "queued" for i in a}

    conn.execute("SELECT pgq.resume_queue('a')")
    assert claim_by_id(conn, worker, a[:1]) == a[:1]
    assert claim_v2(conn, worker, ["a", "b"]) == a[1:]


def test_enqueue_into_a_paused_queue_works(settings: pgq.Settings, conn: Conn) -> None:
    with pgq.connect(settings=settings, strict_tasks=False) as q:
        assert q.pause_queue("emails") is True
        job_id = q.enqueue("send", {}, queue="emails")
        assert q.get(job_id).status == pgq.JobStatus.QUEUED
        assert [p.queue for p in q.paused_queues()] == ["emails"]
        assert q.paused_queues()[0].waiting_jobs == 1


# ---------------------------------------------------------------- a pause against claims in flight


def test_a_claim_starting_after_the_pause_commits_takes_nothing(connect: Callable[..., Conn]) -> None:
    setup, pauser = connect(), connect(autocommit=False)
    claimer = connect(autocommit=False)
    worker = insert_worker(setup, queues=["a"])
    insert_job(setup, queue="a")
    claimer.execute("SELECT 1")  # the claimer's transaction is open before the pause
    pauser.execute("SELECT pgq.pause_queue('a')")
    pauser.commit()
    assert claim_v2(claimer, worker, ["a"]) == []  # each statement reads the pauses committed before it
    claimer.rollback()


def test_a_pause_not_yet_committed_stops_no_claim(connect: Callable[..., Conn]) -> None:
    setup, pauser, claimer = connect(), connect(autocommit=False), connect()
    worker = insert_worker(setup, queues=["a"])
    job = insert_job(setup, queue="a")
    pauser.execute("SELECT pgq.pause_queue('a')")
    assert claim_v2(claimer, worker, ["a"]) == [job]  # and it does not wait for the pauser
    pauser.commit()
    assert factories.job(setup, job)["status"] == "running"


def test_a_claim_in_flight_when_the_pause_commits_keeps_its_jobs(connect: Callable[..., Conn]) -> None:
    setup, pauser, claimer = connect(), connect(), connect(autocommit=False)
    worker = insert_worker(setup, queues=["a"])
    jobs = [insert_job(setup, queue="a") for _ in range(2)]
    assert claim_v2(claimer, worker, ["a"], max_jobs=1) == jobs[:1]  # claimed, not committed
    assert pauser.execute("SELECT pgq.pause_queue('a')").fetchone() == (True,)  # no wait on the claim's locks
    claimer.commit()
    assert factories.statuses(setup, jobs) == {jobs[0]: "running", jobs[1]: "queued"}
    assert claim_v2(claimer, worker, ["a"]) == []
    claimer.commit()


# ---------------------------------------------------------------- API and CLI


def test_a_worker_claims_nothing_from_a_paused_queue_until_it_is_resumed(settings: pgq.Settings) -> None:
    ran: list[int] = []
    with pgq.connect(settings=settings, strict_tasks=False) as q:
        @q.task(name="t", queue="a")
        def t(n: int) -> None:
            ran.append(n)

        q.pause_queue("a")
        q.enqueue("t", {"n": 1}, queue="a")
        worker = q.worker(queues=["a"], install_signal_handlers=False, run_maintenance=False)
        assert worker.run_once() == 0
        assert ran == []
        q.resume_queue("a")
        assert worker.run_once() == 1
        assert ran == [1]


def test_queue_api_refuses_a_bad_name_before_connecting(settings: pgq.Settings) -> None:
    q = pgq.Queue(settings.replace(database_url="postgresql://nobody@127.0.0.1:1/none"))
    with pytest.raises(pgq.ValidationError, match="queue name"):
        q.pause_queue("bad name")
    with pytest.raises(pgq.ValidationError, match="queue name"):
        q.resume_queue("")


def test_cli_pauses_resumes_and_status_shows_paused_queues(monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    monkeypatch.setenv("PGQ_DATABASE_URL", db_url)
    monkeypatch.delenv("PGQ_SCHEMA", raising=False)
    runner = CliRunner()
    assert runner.invoke(main, ["queue", "pause", "emails"]).output == "queue emails paused\n"
    assert runner.invoke(main, ["queue", "pause", "emails"]).output == "queue emails was already paused\n"
    status = runner.invoke(main, ["status"])
    assert status.exit_code == 0
    assert "paused queue" in status.output and "emails" in status.output
    data = json.loads(runner.invoke(main, ["status", "--json"]).output)
    assert [p["queue"] for p in data["paused_queues"]] == ["emails"]
    listed = json.loads(runner.invoke(main, ["queue", "paused", "--json"]).output)
    assert [(p["queue"], p["waiting_jobs"]) for p in listed] == [("emails", 0)]
    assert runner.invoke(main, ["queue", "resume", "emails"]).output == "queue emails resumed\n"
    assert runner.invoke(main, ["queue", "resume", "emails"]).output == "queue emails was not paused\n"
    assert runner.invoke(main, ["queue", "paused"]).output == "no queue is paused\n"
    bad = runner.invoke(main, ["queue", "pause", "bad name"])
    assert bad.exit_code == 2 and "queue name" in bad.output
