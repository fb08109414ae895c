"""Maintenance prunes at the rate pgq runs (issue 9, defect 3), and deletes the rows of
workers long gone (defect 7).

A round prunes in batches of ``prune_batch_size`` finished jobs, each its own
transaction under the leader lock, until a batch comes back short (nothing
left) or ``prune_time_budget_seconds`` is spent (the rest waits for the next
round, and the report and the log say so). Time is an injected clock that
moves one second per reading, so the budget is exact, never slept for.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import factories
import pgq
from pgq.maintenance import PruneReport

pytestmark = pytest.mark.integration

RETENTION = 3600.0


class TickingClock:
    """A monotonic clock that moves one second every time it is read."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        value = self.now
        self.now += 1.0
        return value


def finished_jobs(conn: psycopg.Connection[Any], count: int, *, hours_ago: float = 2.0,
                  status: str = "completed") -> None:
    """``count`` jobs finished ``hours_ago`` (past the one-hour retention), each with an execution."""
    conn.execute(
        "WITH j AS (INSERT INTO pgq.jobs (task, status, attempts, worker_id, started_at, finished_at)"
        "           SELECT 't', %s::pgq.job_status, 1, gen_random_uuid(), t, t"
        "           FROM generate_series(1, %s) AS g,"
        "                LATERAL (SELECT now() - make_interval(secs => %s * 3600) + g * interval '1 ms' AS t) AS x"
        "           RETURNING id, worker_id, started_at)"
        " INSERT INTO pgq.job_executions (job_id, life, attempt, worker_id, started_at, finished_at, outcome)"
        " SELECT id, 1, 1, worker_id, started_at, started_at, 'completed' FROM j",
        (status, count, hours_ago))


@pytest.fixture
def q(settings: pgq.Settings) -> Iterator[pgq.Queue]:
    with pgq.connect(settings=settings.replace(job_retention_seconds=RETENTION)) as queue:
        yield queue


def maintenance(q: pgq.Queue, **settings: Any) -> pgq.Maintenance:
    return pgq.Maintenance(q.settings.replace(**settings), q.pool, q.queries, clock=TickingClock())


def test_one_round_prunes_more_than_the_old_ten_thousand(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    # Revision 0004's round deleted at most 10,000 jobs (one statement per 15 s round).
    finished_jobs(conn, 12_000)
    report = pgq.Maintenance(q.settings, q.pool, q.queries).run_once()

    assert report.leader and report.pruned == 12_000 == report.prune.jobs
    assert report.prune.batches == 3 and not report.prune.backlog  # 5,000 + 5,000 + 2,000 (the short one)
    assert factories.table_counts(conn)["jobs"] == 0
    assert factories.table_counts(conn)["job_executions"] == 0


def test_a_round_prunes_in_batches_until_a_batch_comes_back_short(q: pgq.Queue, conn: psycopg.Connection[Any],
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    finished_jobs(conn, 25)
    finished_jobs(conn, 3, status="cancelled")
    finished_jobs(conn, 4, hours_ago=0.5)  # inside the retention period
    dead = factories.insert_job(conn, status="dead", finished_at=factories.db_now(conn) - dt.timedelta(days=2))

    with caplog.at_level(logging.INFO, logger="pgq.maintenance"):
        report = maintenance(q, prune_batch_size=10, prune_time_budget_seconds=100).run_once()

    # Clock readings: start 0, after batches 1 and 2 (full) 1 and 2, batch 3 short (8 rows), end 3.
    assert report.prune == PruneReport(jobs=28, batches=3, seconds=3.0, backlog=False)
    assert report.pruned == 28
    assert factories.table_counts(conn)["jobs"] == 5  # the 4 recent ones and the dead one
    assert factories.statuses(conn, [dead]) == {dead: "dead"}
    assert "pruned 28 finished job(s) in 3 batch(es)" in caplog.text


def test_the_time_budget_leaves_the_rest_for_the_next_round_and_says_so(
    q: pgq.Queue, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture,
) -> None:
    finished_jobs(conn, 45)
    leader = maintenance(q, prune_batch_size=10, prune_time_budget_seconds=2.5)

    with caplog.at_level(logging.INFO, logger="pgq.maintenance"):
        first = leader.run_once()

    # Budget 2.5 s from 0: batches end at 1 and 2 (go on) and 3 (stop, still full).
    assert first.prune == PruneReport(jobs=30, batches=3, seconds=4.0, backlog=True)
    assert "ran out with more to prune" in caplog.text and "PGQ_PRUNE_TIME_BUDGET_SECONDS" in caplog.text
    assert [r.levelname for r in caplog.records if "ran out" in r.getMessage()] == ["WARNING"]
    assert factories.table_counts(conn)["jobs"] == 15
    second = leader.run_once()
    assert (second.prune.jobs, second.prune.batches, second.prune.backlog) == (15, 2, False)


def test_the_budget_is_at_most_half_a_heartbeat_interval(q: pgq.Queue) -> None:
    # Maintenance runs on the worker's heartbeat thread: pruning must not starve heartbeats.
    assert maintenance(q, prune_time_budget_seconds=60, heartbeat_interval_seconds=10,
                       stale_after_seconds=30).prune_budget_seconds() == 5
    assert maintenance(q, prune_time_budget_seconds=2).prune_budget_seconds() == 2


def test_pruning_stops_when_another_worker_takes_the_lead(q: pgq.Queue, conn: psycopg.Connection[Any],
                                                          connect: Any) -> None:
    finished_jobs(conn, 30)
    leader = maintenance(q, prune_batch_size=10)
    other = connect(autocommit=False)
    other.execute("SELECT pg_advisory_xact_lock(hashtext('pgq-maintenance:pgq'))")  # another leader's round
    try:
        with q.pool.connection() as pooled:
            report = leader.prune(pooled)
    finally:
        other.rollback()

    assert report == PruneReport(jobs=0, batches=0, seconds=1.0, backlog=False)
    assert factories.table_counts(conn)["jobs"] == 30  # the other leader prunes in its round


def test_maintenance_deletes_the_rows_of_workers_gone_for_the_retention_period(
    q: pgq.Queue, conn: psycopg.Connection[Any], now: dt.datetime,
) -> None:
    long_ago = now - dt.timedelta(days=8)
    stopped = factories.insert_worker(conn, status="stopped", last_heartbeat=long_ago)
    stale = factories.insert_worker(conn, status="stale", last_heartbeat=long_ago)
    recent = factories.insert_worker(conn, status="stopped", last_heartbeat=now - dt.timedelta(days=6))
    alive = factories.insert_worker(conn, status="active")

    report = pgq.Maintenance(q.settings, q.pool, q.queries).run_once()

    assert report.workers_pruned == 2
    remaining = {r[0] for r in conn.execute("SELECT id FROM pgq.workers").fetchall()}
    assert remaining == {recent, alive}
    assert not {stopped, stale} & remaining


def test_worker_retention_is_a_setting(q: pgq.Queue, conn: psycopg.Connection[Any], now: dt.datetime) -> None:
    gone = factories.insert_worker(conn, status="stopped", last_heartbeat=now - dt.timedelta(hours=2))
    report = pgq.Maintenance(q.settings.replace(worker_retention_seconds=3600), q.pool, q.queries).run_once()
    assert report.workers_pruned == 1
    assert conn.execute("SELECT count(*) FROM pgq.workers WHERE id = %s", (gone,)).fetchone() == (0,)


def test_a_worker_whose_row_was_pruned_is_told_it_is_not_registered(
    q: pgq.Queue, conn: psycopg.Connection[Any], now: dt.datetime,
) -> None:
    worker_id = uuid.uuid4()
    factories.insert_worker(conn, worker_id=worker_id, status="stale", last_heartbeat=now - dt.timedelta(days=8))
    assert pgq.Maintenance(q.settings, q.pool, q.queries).run_once().workers_pruned == 1
    with pytest.raises(pgq.InvalidTransition, match="not registered"), q.pool.connection() as pooled, \
            pgq.db.translated():
        q.queries.heartbeat_worker(pooled, worker_id, 0, [])


# --- dead jobs past PGQ_DEAD_JOB_RETENTION_SECONDS (issue 15: a kept dead job holds an index page each)
def dead_jobs(conn: psycopg.Connection[Any], count: int, *, hours_ago: float) -> list[int]:
    """``count`` dead jobs that died ``hours_ago``, each with its dead letter and one failed execution."""
    died = factories.db_now(conn) - dt.timedelta(hours=hours_ago)
    ids = [factories.insert_job(conn, status="dead", finished_at=died, last_error="boom") for _ in range(count)]
    for job_id in ids:
        factories.insert_dead_letter(conn, job_id)
        conn.execute("INSERT INTO pgq.job_executions (job_id, life, attempt, started_at, finished_at, outcome)"
                     " VALUES (%s, 1, 1, %s, %s, 'failed')", (job_id, died, died))
    return ids


def test_dead_jobs_are_kept_by_default(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    kept = dead_jobs(conn, 2, hours_ago=24 * 365)
    report = pgq.Maintenance(q.settings, q.pool, q.queries).run_once()
    assert report.prune.dead_jobs == 0
    assert factories.statuses(conn, kept) == {i: "dead" for i in kept}


def test_dead_jobs_past_their_retention_go_with_their_dead_letters_and_history(
    q: pgq.Queue, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture,
) -> None:
    old = dead_jobs(conn, 3, hours_ago=3)
    young = dead_jobs(conn, 2, hours_ago=1)
    finished_jobs(conn, 4)  # completed, past the job retention: pruned first
    requeued = dead_jobs(conn, 1, hours_ago=3)[0]
    q.requeue_dead([requeued])  # queued again: no longer dead, never purged

    with caplog.at_level(logging.INFO, logger="pgq.maintenance"):
        report = maintenance(q, dead_job_retention_seconds=2 * 3600).run_once()

    assert (report.prune.jobs, report.prune.dead_jobs) == (4, 3)
    assert "3 dead job(s) past PGQ_DEAD_JOB_RETENTION_SECONDS" in caplog.text
    remaining = {r[0] for r in conn.execute("SELECT id FROM pgq.jobs").fetchall()}
    assert remaining == {*young, requeued}
    assert conn.execute("SELECT count(*) FROM pgq.dead_letter_queue WHERE job_id = ANY (%s)", (old,)).fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM pgq.job_executions WHERE job_id = ANY (%s)", (old,)).fetchone() == (0,)
    assert len(factories.dead_letters(conn, young[0])) == 1


def test_dead_jobs_wait_while_finished_ones_are_behind(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    dead_jobs(conn, 1, hours_ago=3)
    finished_jobs(conn, 45)
    report = maintenance(q, prune_batch_size=10, prune_time_budget_seconds=2.5,
                         dead_job_retention_seconds=3600).run_once()
    assert (report.prune.jobs, report.prune.dead_jobs, report.prune.backlog) == (30, 0, True)


def test_purging_dead_jobs_stops_when_another_worker_takes_the_lead(
    q: pgq.Queue, conn: psycopg.Connection[Any], connect: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    dead = dead_jobs(conn, 2, hours_ago=3)
    leader = maintenance(q, dead_job_retention_seconds=3600)
    other = connect(autocommit=False)
    purge = leader.queries.purge_dead_jobs_if_leader
    answers: list[int | None] = []

    def lead_taken_first(c: Any, older_than: float) -> int | None:
        # Between the finished jobs' batch (committed) and the dead jobs' one, another worker leads.
        other.execute("SELECT pg_advisory_xact_lock(hashtext('pgq-maintenance:pgq'))")
        answers.append(purge(c, older_than))
        return answers[-1]

    monkeypatch.setattr(leader.queries, "purge_dead_jobs_if_leader", lead_taken_first)
    try:
        with q.pool.connection() as pooled:
            report = leader.prune(pooled)
    finally:
        other.rollback()

    assert answers == [None] and report.dead_jobs == 0 and report.batches == 1
    assert factories.statuses(conn, dead) == {i: "dead" for i in dead}
