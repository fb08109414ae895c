"""pgq.register_worker, pgq.heartbeat_worker and pgq.deregister_worker."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

import factories
from factories import insert_job, insert_worker, raises_sqlstate

pytestmark = pytest.mark.integration


def register(conn: psycopg.Connection[Any], worker_id: uuid.UUID, *, hostname: str = "web-1", pid: int = 100,
             queues: list[str] | None = None, capacity: int = 8, metadata: dict[str, Any] | None = None,
             p_now: dt.datetime | None = None) -> None:
    conn.execute(
        "SELECT pgq.register_worker(%s, %s, %s, %s, %s, %s, coalesce(%s::timestamptz, now()))",
        (worker_id, hostname, pid, queues or ["default"], capacity, Jsonb(metadata or {}), p_now),
    )


def heartbeat(conn: psycopg.Connection[Any], worker_id: uuid.UUID, load: int = 0, running: list[int] | None = None,
              health: float | None = None, p_now: dt.datetime | None = None) -> tuple[str, list[int]]:
    row = conn.execute(
        "SELECT previous_status::text, lost_job_ids FROM pgq.heartbeat_worker(%s, %s, %s::bigint[], %s::real,"
        " coalesce(%s::timestamptz, now()))",
        (worker_id, load, running or [], health, p_now),
    ).fetchone()
    assert row is not None
    return row[0], list(row[1])


def deregister(conn: psycopg.Connection[Any], worker_id: uuid.UUID, p_now: dt.datetime | None = None) -> int:
    row = conn.execute("SELECT pgq.deregister_worker(%s, coalesce(%s::timestamptz, now()))",
                       (worker_id, p_now)).fetchone()
    assert row is not None
    return int(row[0])


# ---------------------------------------------------------------- register_worker


def test_register_creates_an_active_worker(conn, now):
    worker_id = uuid.uuid4()

    register(conn, worker_id, queues=["a", "b"], capacity=16, metadata={"version": "1.0"}, p_now=now)

    w = factories.worker(conn, worker_id)
    assert (w["hostname"], w["pid"], w["queues"], w["capacity"]) == ("web-1", 100, ["a", "b"], 16)
    assert (w["status"], w["last_heartbeat"], w["started_at"], w["stopped_at"]) == ("active", now, now, None)
    assert (w["metadata"], w["current_load"], w["health_score"]) == ({"version": "1.0"}, 0, 1.0)


def test_registering_a_known_id_again_reactivates_and_updates_it(conn, now):
    statuses = ("active", "draining", "stale", "stopped")
    for status in statuses:
        worker_id = insert_worker(conn, status=status, last_heartbeat=now - dt.timedelta(hours=1),
                                  started_at=now - dt.timedelta(hours=2))

        register(conn, worker_id, hostname="web-2", pid=200, queues=["c"], capacity=2, p_now=now)

        w = factories.worker(conn, worker_id)
        # A draining worker stays draining: registering again never undoes a drain.
        expected = "draining" if status == "draining" else "active"
        assert (w["status"], w["last_heartbeat"], w["stopped_at"]) == (expected, now, None), status
        assert (w["hostname"], w["pid"], w["queues"], w["capacity"]) == ("web-2", 200, ["c"], 2), status
        assert w["started_at"] == now - dt.timedelta(hours=2), status
    assert factories.table_counts(conn)["workers"] == len(statuses)


def test_register_rejects_no_queues_or_no_capacity(conn):
    for queues, capacity, constraint in (([], 1, "workers_queues_nonempty"), (["default"], 0, "workers_capacity_positive")):
        with raises_sqlstate("23514") as info:
            conn.execute("SELECT pgq.register_worker(%s, 'h', 1, %s::text[], %s)", (uuid.uuid4(), queues, capacity))
        assert info.value.diag.constraint_name == constraint
    assert factories.table_counts(conn)["workers"] == 0


# ---------------------------------------------------------------- heartbeat_worker


def test_heartbeat_records_time_load_and_health(conn, worker_id, now):
    assert heartbeat(conn, worker_id, load=3, health=0.75, p_now=now) == ("active", [])

    w = factories.worker(conn, worker_id)
    assert (w["last_heartbeat"], w["current_load"], w["updated_at"]) == (now, 3, now)
    assert w["health_score"] == pytest.approx(0.75)


def test_heartbeat_without_health_keeps_the_previous_score(conn, now):
    worker_id = insert_worker(conn, health_score=0.5)

    heartbeat(conn, worker_id, p_now=now)

    assert factories.worker(conn, worker_id)["health_score"] == pytest.approx(0.5)


def test_heartbeat_of_a_draining_worker_keeps_it_draining(conn, now):
    worker_id = insert_worker(conn, status="draining")

    assert heartbeat(conn, worker_id, p_now=now) == ("draining", [])
    assert factories.worker(conn, worker_id)["status"] == "draining"


def test_stale_worker_that_beats_again_is_active_and_learns_which_jobs_it_lost(conn, now):
    worker_id = insert_worker(conn, status="stale", last_heartbeat=now - dt.timedelta(minutes=5))
    still_mine = insert_job(conn, status="running", worker_id=worker_id)
    rescued = insert_job(conn, status="retrying", worker_id=worker_id)
    cancelled = insert_job(conn, status="cancelled", worker_id=worker_id)

    previous, lost = heartbeat(conn, worker_id, load=3, running=[cancelled, still_mine, rescued], p_now=now)

    assert previous == "stale"
    assert lost == sorted([rescued, cancelled])
    w = factories.worker(conn, worker_id)
    assert (w["status"], w["stopped_at"], w["last_heartbeat"]) == ("active", None, now)


def test_job_now_owned_by_another_worker_is_reported_lost(conn, worker_id, other_worker_id):
    job_id = insert_job(conn, status="running", worker_id=other_worker_id)

    assert heartbeat(conn, worker_id, running=[job_id]) == ("active", [job_id])


def test_negative_load_is_stored_as_zero(conn, worker_id):
    heartbeat(conn, worker_id, load=-5)
    assert factories.worker(conn, worker_id)["current_load"] == 0


def test_health_score_out_of_range_is_rejected(conn, worker_id):
    before = factories.snapshot(conn)
    for health in (-0.1, 1.5):
        with raises_sqlstate("23514"):
            heartbeat(conn, worker_id, health=health)
    assert factories.snapshot(conn) == before


def test_stopped_or_unknown_worker_cannot_heartbeat(conn):
    stopped = insert_worker(conn, status="stopped")
    before = factories.snapshot(conn)

    with raises_sqlstate("PQ002", match="stopped"):
        heartbeat(conn, stopped)
    with raises_sqlstate("PQ002", match="not registered"):
        heartbeat(conn, uuid.uuid4())
    assert factories.snapshot(conn) == before


# ---------------------------------------------------------------- deregister_worker


def test_deregister_stops_an_idle_worker(conn, now):
    worker_id = insert_worker(conn, current_load=2)

    assert deregister(conn, worker_id, now) == 0

    w = factories.worker(conn, worker_id)
    assert (w["status"], w["stopped_at"], w["current_load"]) == ("stopped", now, 0)


def test_deregister_interrupts_jobs_still_running_so_they_run_again_at_once(conn, now, drain_notifications):
    worker_id = insert_worker(conn)
    started = now - dt.timedelta(seconds=40)
    retried = insert_job(conn, status="running", worker_id=worker_id, started_at=started, queue="emails")
    last_try = insert_job(conn, status="running", worker_id=worker_id, attempts=3, max_attempts=3)
    elsewhere = insert_job(conn, status="running")
    drain_notifications()

    assert deregister(conn, worker_id, now) == 2

    row = factories.job(conn, retried)
    assert (row["status"], row["run_at"]) == ("retrying", now)
    [execution] = factories.executions(conn, retried)
    assert (execution["outcome"], execution["error_type"], execution["started_at"], execution["finished_at"]) == (
        "interrupted", "WorkerShutdown", started, now)
    assert factories.job(conn, last_try)["status"] == "dead"
    assert factories.dead_letters(conn, last_try)[0]["reason"] == "exhausted"
    assert factories.job(conn, elsewhere)["status"] == "running"
    assert ("pgq_job_available", "emails") in drain_notifications()
    # No job stays running for the stopped worker.
    assert conn.execute("SELECT count(*) FROM pgq.jobs WHERE status = 'running' AND worker_id = %s",
                        (worker_id,)).fetchone() == (0,)


def test_deregister_of_an_unknown_worker_is_rejected(conn):
    with raises_sqlstate("PQ002"):
        deregister(conn, uuid.uuid4())


# ---------------------------------------------------------------- heartbeat_worker: lost claims


def test_heartbeat_rescues_jobs_the_worker_owns_but_never_received(conn, now):
    # A claim that committed while its reply was lost (the connection dropped
    # mid-claim) leaves jobs running for a live worker that does not know them.
    # Found by the chaos suite (pg_terminate_backend scenario, Redis mode).
    me, other = uuid.uuid4(), uuid.uuid4()
    register(conn, me, p_now=now - dt.timedelta(minutes=1))
    register(conn, other, p_now=now - dt.timedelta(minutes=1))
    long_ago = now - dt.timedelta(seconds=11)
    orphan = insert_job(conn, status="running", worker_id=me, attempts=1, started_at=long_ago)
    orphan_last_try = insert_job(conn, status="running", worker_id=me, attempts=3, max_attempts=3,
                                 started_at=long_ago)
    listed = insert_job(conn, status="running", worker_id=me, attempts=1, started_at=long_ago)
    just_claimed = insert_job(conn, status="running", worker_id=me, attempts=1,
                              started_at=now - dt.timedelta(seconds=9))
    someone_elses = insert_job(conn, status="running", worker_id=other, attempts=1, started_at=long_ago)

    assert heartbeat(conn, me, load=1, running=[listed], p_now=now) == ("active", [])

    rescued = factories.job(conn, orphan)
    assert (rescued["status"], rescued["attempts"]) == ("retrying", 1)
    assert rescued["run_at"] == now
    (execution,) = factories.executions(conn, orphan)
    assert (execution["outcome"], execution["error_type"], execution["attempt"]) == ("lost", "ClaimLost", 1)
    assert str(me) in execution["error_message"]
    assert factories.job(conn, orphan_last_try)["status"] == "dead"
    assert factories.dead_letters(conn, orphan_last_try)[0]["reason"] is not None
    # Untouched: the listed job, a claim younger than the grace, another worker's job.
    for job_id in (listed, just_claimed, someone_elses):
        untouched = factories.job(conn, job_id)
        assert (untouched["status"], untouched["attempts"], untouched["started_at"]) == (
            "running", 1, long_ago if job_id != just_claimed else now - dt.timedelta(seconds=9))
        assert factories.executions(conn, job_id) == []
