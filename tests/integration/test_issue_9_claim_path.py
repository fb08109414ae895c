"""Issue 9, the claim path in SQL (revision 0006).

- Defect 7: a claim that overlaps a stale-marking (or a drain) waits for it
  and refuses, instead of handing jobs to a worker declared stale; a
  stale-marking that overlaps a claim waits for it and rescues its jobs.
- Defect 7: a claim across several queues locks only the rows it claims.
- Defect 5: a DBA drains a worker with ``drain_worker()``; claims answer PQ005
  (``pgq.WorkerDraining``), heartbeats say 'draining', and no registration or
  heartbeat turns it active again.
- Defect 8: rescues give back the attempt of a job whose handler never
  started (its claim position is above its worker's watermark), a bounded
  number of times, so a job that kills its worker still reaches the DLQ.
- Defect 8: the heartbeat says which jobs it rescued as ClaimLost.

Concurrency is tested with two real connections: one holds a transaction
open, the other's backend is seen waiting for a lock in ``pg_stat_activity``
(a bounded condition wait), then the first commits.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

import factories
import pgq
from factories import insert_job, insert_worker, raises_sqlstate
from pgq.queries import MirrorQueries, Queries

pytestmark = pytest.mark.integration

MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
STALE_AFTER = dt.timedelta(seconds=90)

Conn = psycopg.Connection[Any]


# ---------------------------------------------------------------- helpers


def claim_v2(conn: Conn, worker_id: uuid.UUID, base: int | None, started_through: int | None, *,
             queues: tuple[str, ...] = ("default",), max_jobs: int = 10,
             p_now: dt.datetime | None = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT id, queue, attempts, claim_position FROM pgq.get_runnable_jobs_v2("
                    "%s, %s, %s, %s, %s, coalesce(%s::timestamptz, now()))",
                    (list(queues), worker_id, max_jobs, base, started_through, p_now))
        return cur.fetchall()


def heartbeat_v2(conn: Conn, worker_id: uuid.UUID, running: list[int], started_through: int | None,
                 p_now: dt.datetime | None = None) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT status::text, previous_status::text, lost_job_ids, rescued_job_ids"
                    " FROM pgq.heartbeat_worker_v2(%s, %s, %s::bigint[], %s, NULL,"
                    " coalesce(%s::timestamptz, now()))",
                    (worker_id, len(running), running, started_through, p_now))
        row = cur.fetchone()
    assert row is not None
    return row


def sweep(conn: Conn, p_now: dt.datetime) -> dict[int, str]:
    rows = conn.execute("SELECT job_id, job_status::text FROM pgq.mark_stale_workers(%s, %s)"
                        " WHERE job_id IS NOT NULL", (STALE_AFTER, p_now)).fetchall()
    return dict(rows)


def register(conn: Conn, worker_id: uuid.UUID, queues: tuple[str, ...] = ("default",),
             p_now: dt.datetime | None = None) -> None:
    conn.execute("SELECT pgq.register_worker(%s, 'h', 1, %s, 4, '{}', coalesce(%s::timestamptz, now()))",
                 (worker_id, list(queues), p_now))


# The four ways to claim, with positions where the function takes them.
CLAIMS = {
    "get_runnable_jobs": "SELECT id FROM pgq.get_runnable_jobs('{default}', %(w)s, 10)",
    "get_runnable_jobs_v2": "SELECT id FROM pgq.get_runnable_jobs_v2('{default}', %(w)s, 10, 0, 0)",
    "claim_jobs": "SELECT id FROM pgq.claim_jobs(%(ids)s, %(w)s)",
    "claim_jobs_v2": "SELECT id FROM pgq.claim_jobs_v2(%(ids)s, %(w)s, 0, 0)",
}


class Claimer:
    """Runs one claim on its own connection in a thread; the outcome is kept."""

    def __init__(self, conn: Conn, statement: str, params: dict[str, Any]) -> None:
        self.conn = conn
        self.pid = conn.info.backend_pid
        self.rows: list[tuple[Any, ...]] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(statement, params), daemon=True)
        self.thread.start()

    def _run(self, statement: str, params: dict[str, Any]) -> None:
        try:
            self.rows = self.conn.execute(statement, params).fetchall()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def result(self) -> list[tuple[Any, ...]] | BaseException:
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the claim never returned"
        return self.error if self.error is not None else (self.rows or [])


def waiting_for_a_lock(observer: Conn, pid: int) -> bool:
    row = observer.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row is not None and row[0] == "Lock"


def blocked_or_done(observer: Conn, claimer: Claimer) -> str:
    """Wait (bounded) until the claimer's backend waits for a lock, or the claim returned."""
    return factories.eventually(
        lambda: ("done" if not claimer.thread.is_alive()
                 else "blocked" if waiting_for_a_lock(observer, claimer.pid) else None),
        "the claim to block on the worker row (or to return)")


# ---------------------------------------------------------------- defect 7: claim vs stale-marking


@pytest.mark.parametrize("function", list(CLAIMS))
def test_claim_that_overlaps_a_stale_marking_waits_for_it_and_refuses(
    connect: Callable[..., Conn], conn: Conn, now: dt.datetime, function: str,
) -> None:
    worker = insert_worker(conn, last_heartbeat=now - HOUR)  # silent: the sweep will mark it stale
    jobs = factories.insert_jobs(conn, 3, run_at=now - MINUTE)
    sweeper = connect(autocommit=False)
    assert sweep(sweeper, now) == {}  # marked stale (no jobs to rescue); transaction still open

    claimer = Claimer(connect(), CLAIMS[function], {"w": worker, "ids": jobs})
    seen = blocked_or_done(conn, claimer)
    sweeper.commit()
    outcome = claimer.result()

    # Old code: the status was read without a lock, the claim did not wait
    # ("done") and handed the three jobs to a worker declared stale.
    assert seen == "blocked"
    assert isinstance(outcome, psycopg.Error) and outcome.sqlstate == "PQ002" and "stale" in str(outcome)
    assert factories.statuses(conn, jobs) == dict.fromkeys(jobs, "queued")
    assert factories.worker(conn, worker)["status"] == "stale"


@pytest.mark.parametrize("function", list(CLAIMS))
def test_claim_that_overlaps_a_drain_waits_for_it_and_answers_draining(
    connect: Callable[..., Conn], conn: Conn, now: dt.datetime, function: str,
) -> None:
    worker = insert_worker(conn)
    jobs = factories.insert_jobs(conn, 3, run_at=now - MINUTE)
    dba = connect(autocommit=False)
    assert dba.execute("SELECT pgq.drain_worker(%s)", (worker,)).fetchone() == (True,)

    claimer = Claimer(connect(), CLAIMS[function], {"w": worker, "ids": jobs})
    seen = blocked_or_done(conn, claimer)
    dba.commit()
    outcome = claimer.result()

    assert seen == "blocked"
    assert isinstance(outcome, psycopg.Error) and outcome.sqlstate == "PQ005"
    assert factories.statuses(conn, jobs) == dict.fromkeys(jobs, "queued")


def test_stale_marking_that_overlaps_an_open_claim_waits_and_rescues_its_jobs(
    connect: Callable[..., Conn], conn: Conn, now: dt.datetime,
) -> None:
    worker = insert_worker(conn, last_heartbeat=now - HOUR)
    jobs = factories.insert_jobs(conn, 3, run_at=now - MINUTE)
    holder = connect(autocommit=False)
    claimed = [r[0] for r in holder.execute("SELECT id FROM pgq.get_runnable_jobs('{default}', %s, 10)",
                                            (worker,)).fetchall()]
    assert claimed == jobs

    sweeper = Claimer(connect(), "SELECT job_id, job_status::text FROM pgq.mark_stale_workers(%(t)s, %(now)s)"
                                 " WHERE job_id IS NOT NULL", {"t": STALE_AFTER, "now": now})
    seen = blocked_or_done(conn, sweeper)
    holder.commit()
    outcome = sweeper.result()

    # Old code: the sweep did not wait; it marked the worker stale, saw no
    # running job (the claim had not committed), and the three jobs stayed
    # running for a stale worker until the next sweep.
    assert seen == "blocked"
    assert sorted(outcome) == [(j, "retrying") for j in jobs]  # type: ignore[arg-type]
    assert factories.statuses(conn, jobs) == dict.fromkeys(jobs, "retrying")


def test_heartbeat_and_stale_marking_of_the_same_worker_do_not_deadlock_with_its_claims(
    connect: Callable[..., Conn], conn: Conn, now: dt.datetime,
) -> None:
    # Lock order: claims take job rows (SKIP LOCKED) and then the worker row;
    # the heartbeat takes the worker row and then jobs with SKIP LOCKED. A
    # claim held open while a heartbeat waits for the worker row must let the
    # heartbeat finish once it commits, and the heartbeat must not rescue
    # the claim's jobs it lists.
    worker = insert_worker(conn)
    jobs = factories.insert_jobs(conn, 2, run_at=now - MINUTE)
    holder = connect(autocommit=False)
    holder.execute("SELECT id FROM pgq.get_runnable_jobs_v2('{default}', %s, 10, 0, 0)", (worker,))
    beat = Claimer(connect(), "SELECT status::text, rescued_job_ids FROM pgq.heartbeat_worker_v2(%(w)s, 2, %(ids)s, 2)",
                   {"w": worker, "ids": jobs})
    assert blocked_or_done(conn, beat) == "blocked"
    holder.commit()
    assert beat.result() == [("active", [])]
    assert factories.worker(conn, worker)["started_through"] == 2


# ---------------------------------------------------------------- defect 7: multi-queue claim locks


def lockable(conn: Conn, queues: list[str]) -> int:
    """How many runnable rows of ``queues`` another claimer could lock right now."""
    row = conn.execute("SELECT count(*) FROM (SELECT id FROM pgq.jobs WHERE queue = ANY (%s)"
                       " AND status IN ('queued', 'retrying') FOR UPDATE SKIP LOCKED) AS s", (queues,)).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("statement", [
    "SELECT id FROM pgq.get_runnable_jobs(%s, %s, 4)",
    "SELECT id FROM pgq.get_runnable_jobs_v2(%s, %s, 4, 0, 0)",
])
def test_multi_queue_claim_locks_only_the_rows_it_claims(
    connect: Callable[..., Conn], conn: Conn, now: dt.datetime, statement: str,
) -> None:
    queues = ["a", "b", "c"]
    for queue in queues:
        factories.insert_jobs(conn, 10, queue=queue, run_at=now - MINUTE)
    worker = insert_worker(conn, queues=queues)
    holder = connect(autocommit=False)

    claimed = holder.execute(statement, (queues, worker)).fetchall()
    other = connect(autocommit=False)
    free = lockable(other, queues)
    other.rollback()
    holder.commit()

    assert len(claimed) == 4
    # Old code: each queue's scan locked 4 rows (12), of which 4 were claimed:
    # another worker could lock only 18 of the 26 unclaimed rows.
    assert free == 30 - 4


def test_multi_queue_claim_looks_past_rows_other_claimers_hold(
    connect: Callable[..., Conn], conn: Conn, now: dt.datetime,
) -> None:
    # Queue a holds the best jobs; another claimer holds the first 6 of them.
    a = [insert_job(conn, queue="a", priority=5, run_at=now - MINUTE + dt.timedelta(seconds=i)) for i in range(12)]
    b = factories.insert_jobs(conn, 5, queue="b", priority=1, run_at=now - MINUTE)
    holder = connect(autocommit=False)
    held = [r[0] for r in holder.execute("SELECT id FROM pgq.get_runnable_jobs('{a}', %s, 6)",
                                         (insert_worker(conn, queues=["a"]),)).fetchall()]
    worker = insert_worker(conn, queues=["a", "b"])

    got = [r[0] for r in conn.execute("SELECT id FROM pgq.get_runnable_jobs('{a,b}', %s, 5)", (worker,)).fetchall()]
    holder.rollback()

    assert held == a[:6]
    # The next five of queue a, in claim order: not queue b's lower priority
    # rows, and not nothing (the first candidates were all held).
    assert got == a[6:11]
    assert factories.statuses(conn, b) == dict.fromkeys(b, "queued")


def test_single_queue_claim_still_walks_the_claim_index(conn: Conn, now: dt.datetime) -> None:
    factories.insert_jobs(conn, 3000, run_at=now - MINUTE)
    conn.execute("ANALYZE pgq.jobs")
    conn.execute("SET search_path TO pgq, pg_catalog")
    try:
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT id FROM jobs WHERE queue = 'default' AND status IN ('queued', 'retrying')"
            " AND run_at <= now() ORDER BY greatest(priority, effective_priority) DESC, run_at, id LIMIT 100"
            " FOR UPDATE SKIP LOCKED").fetchall())
    finally:
        conn.execute("RESET search_path")
    # Revision 0012: the fast path lives in lock_plain_jobs (queues without claim rules).
    source = conn.execute("SELECT prosrc FROM pg_proc WHERE oid = 'pgq.lock_plain_jobs'::regproc").fetchone()[0]
    # The statement above is the fast path's, word for word (whitespace aside), and its plan is
    # the claim index under LockRows under Limit: no sort, no other scan.
    assert " ".join("""SELECT id FROM jobs WHERE queue = v_queues[1] AND status IN ('queued', 'retrying')
                       AND run_at <= p_now ORDER BY greatest(priority, effective_priority) DESC, run_at, id
                       LIMIT p_max_jobs
                       FOR UPDATE SKIP LOCKED""".split()) in " ".join(source.split())
    assert "Index Scan using jobs_claim_idx" in plan and "Sort" not in plan, plan
    assert plan.index("Limit") < plan.index("LockRows") < plan.index("jobs_claim_idx"), plan


# ---------------------------------------------------------------- defect 5: drain_worker


def test_drain_worker_makes_an_active_worker_draining_once(
    conn: Conn, now: dt.datetime, listener: Conn, drain_notifications: Callable[[], list[tuple[str, str]]],
) -> None:
    listener.execute("LISTEN pgq_worker_draining")
    worker = insert_worker(conn)

    first = conn.execute("SELECT pgq.drain_worker(%s, %s)", (worker, now)).fetchone()
    again = conn.execute("SELECT pgq.drain_worker(%s, %s)", (worker, now + MINUTE)).fetchone()

    assert (first, again) == ((True,), (False,))
    w = factories.worker(conn, worker)
    assert (w["status"], w["drain_requested_at"], w["updated_at"]) == ("draining", now, now)
    assert ("pgq_worker_draining", str(worker)) in drain_notifications()


def test_draining_worker_may_not_claim_by_any_path(conn: Conn, now: dt.datetime) -> None:
    worker = insert_worker(conn)
    jobs = factories.insert_jobs(conn, 2, run_at=now - MINUTE)
    conn.execute("SELECT pgq.drain_worker(%s)", (worker,))
    before = factories.snapshot(conn)

    for statement in CLAIMS.values():
        with raises_sqlstate("PQ005", match="draining"):
            conn.execute(statement, {"w": worker, "ids": jobs})
    assert factories.snapshot(conn) == before
    # In Python: pgq.WorkerDraining, an InvalidTransition (code that caught that keeps working).
    with pytest.raises(pgq.WorkerDraining, match="draining"):
        pgq_call(conn, lambda c: Queries("pgq").get_runnable_jobs(c, ["default"], worker, 5))
    with pytest.raises(pgq.InvalidTransition):
        pgq_call(conn, lambda c: MirrorQueries("pgq").claim_jobs_v2(c, jobs, worker, 0, 0))


def pgq_call(conn: Conn, call: Callable[[Conn], Any]) -> Any:
    from pgq.db import translated

    with translated():
        return call(conn)


def test_a_worker_drained_by_a_plain_update_is_honoured_too(conn: Conn, now: dt.datetime) -> None:
    # What a DBA tried first (issue 9, defect 5): every claim failed with PQ002
    # and the worker re-registered, turning itself active again.
    worker = insert_worker(conn)
    factories.insert_jobs(conn, 1, run_at=now - MINUTE)
    conn.execute("UPDATE pgq.workers SET status = 'draining' WHERE id = %s", (worker,))

    with raises_sqlstate("PQ005"):
        conn.execute(CLAIMS["get_runnable_jobs"], {"w": worker})
    register(conn, worker)

    assert factories.worker(conn, worker)["status"] == "draining"  # old code: active again
    with raises_sqlstate("PQ005"):
        conn.execute(CLAIMS["get_runnable_jobs"], {"w": worker})


def test_heartbeat_tells_a_draining_worker_and_keeps_it_draining(conn: Conn) -> None:
    worker = insert_worker(conn)
    conn.execute("SELECT pgq.drain_worker(%s)", (worker,))

    beat = heartbeat_v2(conn, worker, [], None)
    old = conn.execute("SELECT previous_status::text FROM pgq.heartbeat_worker(%s)", (worker,)).fetchone()

    assert (beat["status"], beat["previous_status"]) == ("draining", "draining")
    assert old == ("draining",)
    assert factories.worker(conn, worker)["status"] == "draining"


def test_a_stale_worker_asked_to_drain_comes_back_draining_not_active(conn: Conn, now: dt.datetime) -> None:
    beating = insert_worker(conn, status="stale", last_heartbeat=now - HOUR)
    registering = insert_worker(conn, status="stale", last_heartbeat=now - HOUR)
    for worker in (beating, registering):
        assert conn.execute("SELECT pgq.drain_worker(%s)", (worker,)).fetchone() == (True,)
        assert factories.worker(conn, worker)["status"] == "stale"  # still silent: stays stale
        assert conn.execute("SELECT pgq.drain_worker(%s)", (worker,)).fetchone() == (False,)

    beat = heartbeat_v2(conn, beating, [], None)
    register(conn, registering)

    assert (beat["previous_status"], beat["status"]) == ("stale", "draining")
    assert factories.worker(conn, registering)["status"] == "draining"


def test_a_stopped_worker_registering_again_starts_a_new_life_without_the_drain(conn: Conn) -> None:
    worker = insert_worker(conn)
    conn.execute("SELECT pgq.drain_worker(%s)", (worker,))
    conn.execute("SELECT pgq.deregister_worker(%s)", (worker,))

    register(conn, worker)

    w = factories.worker(conn, worker)
    assert (w["status"], w["drain_requested_at"]) == ("active", None)


def test_drain_worker_refuses_unknown_and_stopped_workers_and_changes_nothing(conn: Conn) -> None:
    stopped = insert_worker(conn, status="stopped")
    before = factories.snapshot(conn)

    with raises_sqlstate("PQ002", match="not registered"):
        conn.execute("SELECT pgq.drain_worker(%s)", (uuid.uuid4(),))
    with raises_sqlstate("PQ002", match="not registered"):
        conn.execute("SELECT pgq.drain_worker(NULL)")
    with raises_sqlstate("PQ002", match="stopped"):
        conn.execute("SELECT pgq.drain_worker(%s)", (stopped,))
    assert factories.snapshot(conn) == before
    with pytest.raises(pgq.InvalidTransition, match="not registered"):
        pgq_call(conn, lambda c: Queries("pgq").drain_worker(c, uuid.uuid4()))


def test_a_draining_worker_finishes_releases_and_deregisters(conn: Conn, now: dt.datetime) -> None:
    worker = insert_worker(conn)
    jobs = factories.insert_jobs(conn, 3, run_at=now - MINUTE)
    claimed = claim_v2(conn, worker, 0, 0)
    conn.execute("SELECT pgq.drain_worker(%s)", (worker,))

    done = conn.execute("SELECT * FROM pgq.complete_jobs(%s, %s, '{1}')", (worker, [jobs[0]])).fetchall()
    released = conn.execute("SELECT * FROM pgq.release_jobs(%s, %s, '{1,1}')", (worker, jobs[1:])).fetchall()
    beat = heartbeat_v2(conn, worker, [], 1)
    taken_back = conn.execute("SELECT pgq.deregister_worker(%s)", (worker,)).fetchone()

    assert [r["id"] for r in claimed] == jobs
    assert (done, sorted(released), beat["status"], taken_back) == ([(jobs[0],)], [(j,) for j in jobs[1:]],
                                                                    "draining", (0,))
    assert factories.statuses(conn, jobs) == {jobs[0]: "completed", jobs[1]: "queued", jobs[2]: "queued"}
    assert factories.worker(conn, worker)["status"] == "stopped"


# ---------------------------------------------------------------- defect 8: an attempt counts once started


def test_claim_positions_run_from_the_base_in_claim_order(conn: Conn, now: dt.datetime) -> None:
    worker = insert_worker(conn, queues=["a", "b"])
    low = insert_job(conn, queue="a", priority=1, run_at=now - MINUTE)
    high = insert_job(conn, queue="b", priority=5, run_at=now - MINUTE)
    mid = insert_job(conn, queue="a", priority=3, run_at=now - MINUTE)
    later = insert_job(conn, queue="a", priority=3, run_at=now - MINUTE)

    first = claim_v2(conn, worker, 100, 0, queues=("a", "b"), max_jobs=2)
    by_id = conn.execute("SELECT id, claim_position FROM pgq.claim_jobs_v2(%s, %s, 102, 0)",
                         ([later, low], worker)).fetchall()
    old_style = conn.execute("SELECT claim_position FROM pgq.get_runnable_jobs('{a}', %s, 5)", (worker,)).fetchall()

    assert [(r["id"], r["claim_position"]) for r in first] == [(high, 101), (mid, 102)]
    assert by_id == [(later, 103), (low, 104)]
    assert old_style == []  # nothing left
    stored = dict(conn.execute("SELECT id, claim_position FROM pgq.jobs").fetchall())
    assert stored == {high: 101, mid: 102, later: 103, low: 104}


def test_a_claim_without_positions_leaves_none(conn: Conn, now: dt.datetime) -> None:
    worker = insert_worker(conn)
    job = insert_job(conn, run_at=now - MINUTE)
    # A job claimed with a position before, and given back, is claimed again by the old function.
    claim_v2(conn, worker, 0, 0)
    conn.execute("SELECT * FROM pgq.release_jobs(%s, %s, '{1}')", (worker, [job]))

    conn.execute("SELECT id FROM pgq.get_runnable_jobs('{default}', %s, 1)", (worker,))

    assert factories.job(conn, job)["claim_position"] is None


def test_rescue_after_a_crash_gives_back_exactly_the_unstarted_attempts(conn: Conn, now: dt.datetime) -> None:
    worker = uuid.uuid4()
    register(conn, worker, p_now=now)
    jobs = factories.insert_jobs(conn, 6, run_at=now - MINUTE)
    first = claim_v2(conn, worker, 0, 0, max_jobs=4, p_now=now)           # positions 1-4
    second = claim_v2(conn, worker, 4, 2, max_jobs=4, p_now=now)          # 5-6; jobs 1-2 have started
    heartbeat_v2(conn, worker, jobs, 3, p_now=now)                        # job 3 has started too
    claim_v2(conn, worker, 8, 1, max_jobs=4, p_now=now)                   # a late, lower report: ignored

    rescued = sweep(conn, now + HOUR)                                     # the worker was killed

    assert [r["claim_position"] for r in first + second] == [1, 2, 3, 4, 5, 6]
    started, unstarted = jobs[:3], jobs[3:]
    assert rescued == {**dict.fromkeys(started, "retrying"), **dict.fromkeys(unstarted, "queued")}
    for job_id in started:  # these pay: the attempt counts, and is in the history
        row = factories.job(conn, job_id)
        assert (row["attempts"], row["free_rescues"], row["last_error"][:10]) == (1, 0, "WorkerLost")
        assert [e["outcome"] for e in factories.executions(conn, job_id)] == ["lost"]
    for job_id in unstarted:  # these never ran: no attempt, no execution
        row = factories.job(conn, job_id)
        assert (row["status"], row["attempts"], row["free_rescues"]) == ("queued", 0, 1)
        assert (row["worker_id"], row["started_at"], row["claim_position"], row["run_at"]) == (
            None, None, None, now + HOUR)
        assert factories.executions(conn, job_id) == []


def test_without_positions_every_rescued_attempt_counts_as_before(conn: Conn, now: dt.datetime) -> None:
    worker = insert_worker(conn, last_heartbeat=now)
    jobs = factories.insert_jobs(conn, 2, run_at=now - MINUTE)
    conn.execute("SELECT id FROM pgq.get_runnable_jobs('{default}', %s, 5, %s)", (worker, now))

    assert sweep(conn, now + HOUR) == dict.fromkeys(jobs, "retrying")
    assert [factories.job(conn, j)["attempts"] for j in jobs] == [1, 1]


def test_a_job_that_kills_every_worker_still_reaches_the_dead_letter_queue(conn: Conn, now: dt.datetime) -> None:
    job = insert_job(conn, run_at=now - MINUTE, max_attempts=2)
    outcomes = []
    t = now
    for _ in range(5):
        worker = uuid.uuid4()
        register(conn, worker, p_now=t)
        claimed = claim_v2(conn, worker, 0, 0, p_now=t)  # starts it and dies before any report
        if not claimed:
            break
        t += HOUR
        outcomes.append(sweep(conn, t)[job])

    # Two free rescues (max_attempts), then two that count: dead after four crashes.
    assert outcomes == ["queued", "queued", "retrying", "dead"]
    row = factories.job(conn, job)
    assert (row["status"], row["attempts"], row["free_rescues"]) == ("dead", 2, 2)
    assert [d["reason"] for d in factories.dead_letters(conn, job)] == ["exhausted"]


def test_heartbeat_rescue_of_a_lost_claim_uses_the_watermark_and_says_what_it_rescued(
    conn: Conn, now: dt.datetime,
) -> None:
    worker = uuid.uuid4()
    register(conn, worker, p_now=now)
    jobs = factories.insert_jobs(conn, 3, run_at=now - MINUTE)
    claim_v2(conn, worker, 0, 0, p_now=now)  # positions 1-3

    # The worker holds only job 1 (the reply of the claim was lost for the rest, say),
    # and has started through position 2.
    beat = heartbeat_v2(conn, worker, [jobs[0]], 2, p_now=now + dt.timedelta(seconds=11))

    assert (beat["status"], beat["lost_job_ids"], beat["rescued_job_ids"]) == ("active", [], jobs[1:])
    assert factories.statuses(conn, jobs) == {jobs[0]: "running", jobs[1]: "retrying", jobs[2]: "queued"}
    assert [factories.job(conn, j)["attempts"] for j in jobs] == [1, 1, 0]


def test_deregister_gives_back_unstarted_attempts_and_charges_started_ones(conn: Conn, now: dt.datetime) -> None:
    worker = uuid.uuid4()
    register(conn, worker, p_now=now)
    jobs = factories.insert_jobs(conn, 3, run_at=now - MINUTE)
    claim_v2(conn, worker, 0, 1, p_now=now)

    assert conn.execute("SELECT pgq.deregister_worker(%s, %s)", (worker, now)).fetchone() == (3,)
    assert factories.statuses(conn, jobs) == {jobs[0]: "retrying", jobs[1]: "queued", jobs[2]: "queued"}
    assert [e["outcome"] for e in factories.executions(conn, jobs[0])] == ["interrupted"]
    assert factories.executions(conn, jobs[1]) == []


def test_timed_out_jobs_that_never_started_go_back_without_charge(conn: Conn, now: dt.datetime) -> None:
    worker = uuid.uuid4()
    register(conn, worker, p_now=now)
    jobs = [insert_job(conn, run_at=now - MINUTE, timeout=dt.timedelta(seconds=5)) for _ in range(2)]
    claim_v2(conn, worker, 0, 1, p_now=now)  # job 1 started, job 2 waits in a stuck worker's buffer

    rows = conn.execute("SELECT job_id, job_status::text FROM pgq.fail_timed_out_jobs('0 s', %s)",
                        (now + MINUTE,)).fetchall()

    assert dict(rows) == {jobs[0]: "retrying", jobs[1]: "queued"}
    assert [factories.job(conn, j)["attempts"] for j in jobs] == [1, 0]


def test_registering_again_starts_the_watermark_at_zero_but_draining_keeps_it(conn: Conn) -> None:
    active, draining = uuid.uuid4(), uuid.uuid4()
    for worker in (active, draining):
        register(conn, worker)
        heartbeat_v2(conn, worker, [], 50)
    conn.execute("SELECT pgq.drain_worker(%s)", (draining,))

    register(conn, active)
    register(conn, draining)

    assert factories.worker(conn, active)["started_through"] == 0
    assert factories.worker(conn, draining)["started_through"] == 50


def test_an_empty_claim_stores_a_higher_watermark_and_otherwise_writes_nothing(conn: Conn) -> None:
    worker = insert_worker(conn)

    def row_version() -> Any:
        return conn.execute("SELECT xmin::text, started_through FROM pgq.workers WHERE id = %s", (worker,)).fetchone()

    assert claim_v2(conn, worker, 0, 7) == []
    raised = row_version()
    assert claim_v2(conn, worker, 0, 7) == [] and claim_v2(conn, worker, 0, 3) == []

    assert raised[1] == 7
    assert row_version() == raised  # same row version: an idle worker's polls write nothing


def test_negative_positions_or_watermarks_are_refused_and_change_nothing(conn: Conn, now: dt.datetime) -> None:
    worker = insert_worker(conn)
    job = insert_job(conn, run_at=now - MINUTE)
    before = factories.snapshot(conn)

    for base, through in ((-1, 0), (0, -1)):
        with raises_sqlstate("PQ004", match="must not be negative"):
            claim_v2(conn, worker, base, through)
        with raises_sqlstate("PQ004", match="must not be negative"):
            conn.execute("SELECT * FROM pgq.claim_jobs_v2(%s, %s, %s, %s)", ([job], worker, base, through))
    with raises_sqlstate("PQ004", match="must not be negative"):
        heartbeat_v2(conn, worker, [], -5)
    assert factories.snapshot(conn) == before


# ---------------------------------------------------------------- the Python wrappers


def test_python_wrappers_claim_with_positions_beat_and_drain(conn: Conn, now: dt.datetime) -> None:
    queries, mirror = Queries("pgq"), MirrorQueries("pgq")
    worker = uuid.uuid4()
    queries.register_worker(conn, worker, "h", 1, ["default"], 4, "{}")
    jobs = factories.insert_jobs(conn, 4, run_at=now - MINUTE)

    claimed = queries.get_runnable_jobs_v2(conn, ["default"], worker, 2, 10, 0)
    by_id = mirror.claim_jobs_v2(conn, jobs[2:], worker, 12, 11)
    beat = queries.heartbeat_worker_v2(conn, worker, 3, jobs[:3], 12)
    drained = queries.drain_worker(conn, worker)
    again = queries.heartbeat_worker_v2(conn, worker, 3, jobs[:3], None)

    assert [j.id for j in claimed] == jobs[:2] and [j.id for j in by_id] == jobs[2:]
    positions = dict(conn.execute("SELECT id, claim_position FROM pgq.jobs").fetchall())
    assert positions == {jobs[0]: 11, jobs[1]: 12, jobs[2]: 13, jobs[3]: 14}
    assert (beat.status, beat.previous_status, beat.lost_job_ids, beat.rescued_job_ids) == ("active", "active", [], [])
    assert drained is True
    assert (again.status, again.lost_job_ids) == ("draining", [])
    assert factories.worker(conn, worker)["started_through"] == 12
