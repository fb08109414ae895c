"""pgq.get_runnable_jobs: claim order, due times, queues, worker checks, SKIP LOCKED."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections import Counter
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

import factories
from factories import insert_job, insert_worker, raises_sqlstate

pytestmark = pytest.mark.integration

MINUTE = dt.timedelta(minutes=1)


def claim(
    conn: psycopg.Connection[Any],
    worker_id: uuid.UUID,
    queues: list[str] | tuple[str, ...] = ("default",),
    max_jobs: int = 1,
    p_now: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT *, status::text AS status FROM pgq.get_runnable_jobs(%s, %s, %s, coalesce(%s::timestamptz, now()))",
            (list(queues), worker_id, max_jobs, p_now),
        )
        return cur.fetchall()


def claim_ids(*args: Any, **kwargs: Any) -> list[int]:
    return [row["id"] for row in claim(*args, **kwargs)]


def test_claim_marks_job_running_for_the_worker(conn, worker_id, now):
    job_id = insert_job(conn, run_at=now - MINUTE, payload={"to": "a@b.c"})
    p_now = now + MINUTE

    rows = claim(conn, worker_id, p_now=p_now)

    assert [r["id"] for r in rows] == [job_id]
    returned = rows[0]
    stored = factories.job(conn, job_id)
    for row in (returned, stored):
        assert row["status"] == "running"
        assert row["worker_id"] == worker_id
        assert row["attempts"] == 1
        assert row["started_at"] == p_now
        assert row["updated_at"] == p_now
        assert row["payload"] == {"to": "a@b.c"}
    # The running attempt lives on the jobs row; job_executions gets it when it ends.
    assert factories.executions(conn, job_id) == []


def test_claim_returns_nothing_and_changes_nothing_when_no_job_is_due(conn, worker_id, now):
    insert_job(conn, run_at=now + MINUTE)
    before = factories.snapshot(conn)

    assert claim(conn, worker_id, p_now=now) == []
    assert factories.snapshot(conn) == before


def test_claims_highest_priority_first_then_oldest_run_at_then_lowest_id(conn, worker_id, now):
    specs = [
        (1, now - 5 * MINUTE),
        (5, now - 1 * MINUTE),
        (3, now - 2 * MINUTE),
        (5, now - 3 * MINUTE),
        (3, now - 2 * MINUTE),  # same priority and run_at as the third: id decides
        (2, now - 9 * MINUTE),
        (5, now - 1 * MINUTE),
    ]
    ids = [insert_job(conn, priority=p, run_at=r) for p, r in specs]
    expected = [job_id for job_id, _ in sorted(zip(ids, specs, strict=True),
                                               key=lambda x: (-x[1][0], x[1][1], x[0]))]

    claimed = [claim_ids(conn, worker_id, p_now=now)[0] for _ in ids]

    assert claimed == expected
    assert claim_ids(conn, worker_id, p_now=now) == []


def test_batch_claim_takes_the_first_jobs_in_claim_order_and_returns_them_in_that_order(conn, worker_id, now):
    specs = [(p, now - dt.timedelta(seconds=s)) for p, s in
             [(1, 50), (4, 10), (2, 40), (5, 5), (4, 30), (3, 20), (5, 60), (1, 70), (2, 15), (3, 25)]]
    ids = [insert_job(conn, priority=p, run_at=r) for p, r in specs]
    order = [job_id for job_id, _ in sorted(zip(ids, specs, strict=True), key=lambda x: (-x[1][0], x[1][1], x[0]))]

    first = claim_ids(conn, worker_id, max_jobs=4, p_now=now)
    second = claim_ids(conn, worker_id, max_jobs=100, p_now=now)

    assert first == order[:4]
    assert second == order[4:]


def test_delayed_job_is_not_claimed_before_its_run_at(conn, worker_id, now):
    run_at = now + dt.timedelta(seconds=30)
    job_id = insert_job(conn, run_at=run_at)

    assert claim_ids(conn, worker_id, p_now=run_at - dt.timedelta(microseconds=1)) == []
    assert factories.job(conn, job_id)["status"] == "queued"
    assert claim_ids(conn, worker_id, p_now=run_at) == [job_id]


def test_retrying_job_is_claimed_once_due_and_its_attempt_count_grows(conn, worker_id, now):
    job_id = insert_job(conn, status="retrying", attempts=1, run_at=now + MINUTE)

    assert claim_ids(conn, worker_id, p_now=now) == []
    rows = claim(conn, worker_id, p_now=now + MINUTE)

    assert [r["id"] for r in rows] == [job_id]
    assert rows[0]["attempts"] == 2
    assert rows[0]["status"] == "running"


def test_jobs_that_are_not_queued_or_retrying_are_never_claimed(conn, worker_id, now):
    for status in ("waiting", "running", "completed", "dead", "cancelled"):
        insert_job(conn, status=status, run_at=now - MINUTE)
    before = factories.snapshot(conn)

    assert claim(conn, worker_id, max_jobs=10, p_now=now) == []
    assert factories.snapshot(conn) == before


def test_claims_only_from_the_named_queue(conn, worker_id, now):
    mine = insert_job(conn, queue="emails", run_at=now - MINUTE)
    other = insert_job(conn, queue="reports", run_at=now - 2 * MINUTE, priority=5)

    assert claim_ids(conn, worker_id, queues=["emails"], max_jobs=10, p_now=now) == [mine]
    assert factories.job(conn, other)["status"] == "queued"


def test_multi_queue_claim_merges_queues_in_claim_order(conn, worker_id, now):
    specs = [("a", 3, 10), ("b", 5, 5), ("c", 5, 50), ("a", 5, 20), ("b", 1, 30), ("c", 2, 40), ("a", 4, 1)]
    ids = [insert_job(conn, queue=q, priority=p, run_at=now - dt.timedelta(seconds=s)) for q, p, s in specs]
    ignored = insert_job(conn, queue="d", priority=5, run_at=now - MINUTE)
    order = [job_id for job_id, (_, p, s) in
             sorted(zip(ids, specs, strict=True), key=lambda x: (-x[1][1], -x[1][2], x[0]))]

    first = claim_ids(conn, worker_id, queues=["a", "b", "c"], max_jobs=3, p_now=now)
    rest = claim_ids(conn, worker_id, queues=["c", "b", "a", "a"], max_jobs=100, p_now=now)

    assert first == order[:3]
    assert rest == order[3:]
    assert factories.job(conn, ignored)["status"] == "queued"


def test_max_jobs_limits_the_batch(conn, worker_id, now):
    factories.insert_jobs(conn, 7, run_at=now - MINUTE)

    assert len(claim_ids(conn, worker_id, max_jobs=3, p_now=now)) == 3
    assert len(claim_ids(conn, worker_id, max_jobs=3, p_now=now)) == 3
    assert len(claim_ids(conn, worker_id, max_jobs=3, p_now=now)) == 1


def test_worker_that_is_not_active_cannot_claim(conn, now):
    insert_job(conn, run_at=now - MINUTE)
    # Draining has a code of its own (PQ005, pgq.WorkerDraining): claiming again cannot help.
    for status, sqlstate in (("draining", "PQ005"), ("stale", "PQ002"), ("stopped", "PQ002")):
        worker_id = insert_worker(conn, status=status)
        before = factories.snapshot(conn)

        with raises_sqlstate(sqlstate, match=status):
            claim(conn, worker_id, p_now=now)
        assert factories.snapshot(conn) == before, status


def test_unregistered_worker_cannot_claim(conn, now):
    insert_job(conn, run_at=now - MINUTE)
    before = factories.snapshot(conn)

    with raises_sqlstate("PQ002", match="not registered"):
        claim(conn, uuid.uuid4(), p_now=now)
    assert factories.snapshot(conn) == before


def test_max_jobs_below_one_or_no_queue_is_rejected(conn, worker_id, now):
    insert_job(conn, run_at=now - MINUTE)
    before = factories.snapshot(conn)

    for max_jobs in (0, -1):
        with raises_sqlstate("PQ004", match="p_max_jobs"):
            claim(conn, worker_id, max_jobs=max_jobs, p_now=now)
    with raises_sqlstate("PQ004", match="p_queues"):
        claim(conn, worker_id, queues=[], p_now=now)
    assert factories.snapshot(conn) == before


@pytest.mark.parametrize("queues", [["default"], ["default", "other"]])
def test_second_claimer_skips_rows_locked_by_an_open_claim(connect, conn, now, queues):
    job_ids = factories.insert_jobs(conn, 4, run_at=now - MINUTE)
    first_worker = insert_worker(conn, queues=queues)
    second_worker = insert_worker(conn, queues=queues)
    holder = connect(autocommit=False)
    other = connect()
    # Without SKIP LOCKED the second claim would wait for the first: fail fast instead.
    other.execute("SET lock_timeout = '5s'")

    # The first claimer's transaction stays open: its rows stay locked.
    held = claim_ids(holder, first_worker, queues=queues, max_jobs=2, p_now=now)
    taken = claim_ids(other, second_worker, queues=queues, max_jobs=10, p_now=now)

    assert held == job_ids[:2]
    assert taken == job_ids[2:]
    # Uncommitted: the rest of the world still sees the held jobs as queued.
    assert factories.statuses(conn, held) == {job_id: "queued" for job_id in held}
    holder.commit()
    owners = dict(conn.execute(
        "SELECT id, worker_id FROM pgq.jobs WHERE id = ANY(%s)", (job_ids,)).fetchall())
    assert owners == {**{i: first_worker for i in held}, **{i: second_worker for i in taken}}


def test_rolled_back_claim_leaves_the_jobs_claimable(connect, conn, worker_id, now):
    job_ids = factories.insert_jobs(conn, 2, run_at=now - MINUTE)
    holder = connect(autocommit=False)

    assert claim_ids(holder, worker_id, max_jobs=2, p_now=now) == job_ids
    holder.rollback()

    assert claim_ids(conn, worker_id, max_jobs=2, p_now=now) == job_ids


def test_eight_concurrent_claimers_claim_each_of_2000_jobs_exactly_once(connect, conn, now):
    job_ids = factories.insert_jobs(conn, 2000, run_at=now - MINUTE)
    workers = [insert_worker(conn) for _ in range(8)]
    connections = [connect() for _ in workers]
    start = threading.Barrier(len(workers))
    claimed: list[list[int]] = [[] for _ in workers]
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            start.wait(timeout=30)
            while True:
                ids = claim_ids(connections[index], workers[index], max_jobs=7, p_now=now)
                if not ids:
                    return
                claimed[index].extend(ids)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors
    all_claimed = [job_id for ids in claimed for job_id in ids]
    duplicates = [job_id for job_id, n in Counter(all_claimed).items() if n > 1]
    assert duplicates == []
    assert sorted(all_claimed) == job_ids
    # More than one claimer got work, so the claims really ran side by side.
    assert sum(1 for ids in claimed if ids) > 1
    rows = conn.execute(
        "SELECT worker_id, count(*), min(attempts), max(attempts) FROM pgq.jobs"
        " WHERE status = 'running' GROUP BY worker_id").fetchall()
    assert {r[0]: r[1] for r in rows} == {workers[i]: len(ids) for i, ids in enumerate(claimed) if ids}
    assert all(r[2] == r[3] == 1 for r in rows)
