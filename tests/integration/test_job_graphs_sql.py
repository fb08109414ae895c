"""Job graphs in SQL: enqueue_jobs_v2 / enqueue_job_v2 (waiting, queued, cancelled; bad
graphs; inherited and lent priority) and the release inside complete_jobs, including
two parents of one child completing in two concurrent transactions.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import factories
from factories import eventually, insert_job, raises_sqlstate

pytestmark = pytest.mark.integration


def enqueue(conn: psycopg.Connection[Any], task: str = "t", *, depends_on: list[int] | None = None,
            priority: int | None = None, queue: str = "default") -> int:
    row = conn.execute("SELECT pgq.enqueue_job_v2(%s, p_queue => %s, p_priority => %s, p_depends_on => %s::bigint[])",
                       (task, queue, priority, depends_on)).fetchone()
    assert row is not None
    return int(row[0])


def graph(conn: psycopg.Connection[Any], n: int, edges: list[tuple[int, int | None, int | None]],
          priorities: list[int | None] | None = None) -> list[int]:
    """enqueue_jobs_v2 with ``n`` jobs and (child position, parent id, parent position) edges (1-based)."""
    rows = conn.execute(
        "SELECT job_id FROM pgq.enqueue_jobs_v2(%s::text[], %s::jsonb[], p_priorities => %s::int[],"
        " p_dep_child => %s::int[], p_dep_parent_id => %s::bigint[], p_dep_parent_ord => %s::int[]) ORDER BY ord",
        (["t"] * n, ["{}"] * n, priorities or [None] * n,
         [e[0] for e in edges], [e[1] for e in edges], [e[2] for e in edges])).fetchall()
    return [int(r[0]) for r in rows]


def job(conn: psycopg.Connection[Any], job_id: int) -> dict[str, Any]:
    row = conn.execute("SELECT status::text, priority, effective_priority, last_error, run_at, finished_at"
                       " FROM pgq.jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return dict(zip(("status", "priority", "effective_priority", "last_error", "run_at", "finished_at"), row,
                    strict=True))


def running(conn: psycopg.Connection[Any], **kwargs: Any) -> tuple[int, uuid.UUID]:
    """A running job and its worker."""
    job_id = insert_job(conn, status="running", **kwargs)
    return job_id, factories.job(conn, job_id)["worker_id"]


def complete(conn: psycopg.Connection[Any], job_id: int, worker: uuid.UUID) -> list[int]:
    return [int(r[0]) for r in conn.execute(
        "SELECT * FROM pgq.complete_jobs(%s, %s::bigint[], '{1}')", (worker, [job_id])).fetchall()]


# ---------------------------------------------------------------- enqueue


def test_a_job_waits_for_an_unfinished_parent_and_not_for_a_completed_one(conn: psycopg.Connection[Any]) -> None:
    queued = insert_job(conn, status="queued")
    done = insert_job(conn, status="completed")
    assert job(conn, enqueue(conn, depends_on=[queued]))["status"] == "waiting"
    assert job(conn, enqueue(conn, depends_on=[done]))["status"] == "queued"
    assert job(conn, enqueue(conn, depends_on=[done, queued]))["status"] == "waiting"
    assert job(conn, enqueue(conn, depends_on=[]))["status"] == "queued"


@pytest.mark.parametrize("parent_status", ["dead", "cancelled"])
def test_a_child_of_a_dead_or_cancelled_parent_is_cancelled_with_the_reason(
    conn: psycopg.Connection[Any], parent_status: str,
) -> None:
    parent = insert_job(conn, status=parent_status)
    child, grandchild = graph(conn, 2, [(1, parent, None), (2, None, 1)])
    for job_id in (child, grandchild):
        row = job(conn, job_id)
        assert row["status"] == "cancelled"
        assert row["last_error"] == f"cancelled: parent job {parent} is {parent_status}"
        assert row["finished_at"] is not None


def test_a_graph_in_one_call_records_its_edges_and_waits_below_the_roots(conn: psycopg.Connection[Any]) -> None:
    # A diamond: 1 -> 2, 1 -> 3, (2, 3) -> 4.
    ids = graph(conn, 4, [(2, None, 1), (3, None, 1), (4, None, 2), (4, None, 3)])
    assert [job(conn, i)["status"] for i in ids] == ["queued", "waiting", "waiting", "waiting"]
    edges = conn.execute("SELECT parent_id, child_id FROM pgq.job_dependencies ORDER BY 1, 2").fetchall()
    assert edges == sorted([(ids[0], ids[1]), (ids[0], ids[2]), (ids[1], ids[3]), (ids[2], ids[3])])


def test_a_child_without_a_priority_inherits_the_highest_of_its_parents(conn: psycopg.Connection[Any]) -> None:
    low = insert_job(conn, priority=1)
    high = insert_job(conn, priority=4)
    assert job(conn, enqueue(conn, depends_on=[low, high]))["priority"] == 4
    assert job(conn, enqueue(conn, depends_on=[low, high], priority=2))["priority"] == 2
    assert job(conn, enqueue(conn))["priority"] == 3
    # Within one call, down a chain: 5 -> (inherits) -> (inherits), and an explicit 1 stops it.
    ids = graph(conn, 4, [(2, None, 1), (3, None, 2), (4, None, 3)], priorities=[5, None, None, 1])
    assert [job(conn, i)["priority"] for i in ids] == [5, 5, 5, 1]


def test_a_waiting_job_lends_its_priority_to_its_unfinished_ancestors(conn: psycopg.Connection[Any]) -> None:
    grandparent = insert_job(conn, priority=1)
    parent = enqueue(conn, depends_on=[grandparent], priority=2)
    done = insert_job(conn, status="completed", priority=1)
    high_ancestor = insert_job(conn, priority=5)
    enqueue(conn, depends_on=[parent, done, high_ancestor], priority=4)
    assert job(conn, grandparent)["effective_priority"] == 4
    assert job(conn, parent)["effective_priority"] == 4
    assert job(conn, done)["effective_priority"] is None  # finished: nothing to lend to
    assert job(conn, high_ancestor)["effective_priority"] is None  # already higher
    assert (job(conn, grandparent)["priority"], job(conn, parent)["priority"]) == (1, 2)  # their own stay
    enqueue(conn, depends_on=[parent], priority=3)  # lower: never lowers what was lent
    assert job(conn, grandparent)["effective_priority"] == 4


def test_a_cancelled_lender_withdraws_its_priority_and_the_remaining_lenders_keep_theirs(
        conn: psycopg.Connection[Any]) -> None:
    grandparent = insert_job(conn, priority=1)
    parent = enqueue(conn, depends_on=[grandparent], priority=2)
    five = enqueue(conn, depends_on=[parent], priority=5)
    four = enqueue(conn, depends_on=[parent], priority=4)
    other_root = insert_job(conn, priority=1)
    shared = enqueue(conn, depends_on=[other_root, parent], priority=3)  # a second path up
    assert [job(conn, i)["effective_priority"] for i in (grandparent, parent, other_root)] == [5, 5, 3]
    lowered = conn.execute("SELECT pgq.cancel_job(%s)", (five,)).fetchone()
    assert lowered == (True,)
    # The priority-4 lender is left: both ancestors come down to 4, not further.
    assert [job(conn, i)["effective_priority"] for i in (grandparent, parent)] == [4, 4]
    conn.execute("SELECT pgq.cancel_job(%s)", (four,))
    assert [job(conn, i)["effective_priority"] for i in (grandparent, parent, other_root)] == [3, 3, 3]
    conn.execute("SELECT pgq.cancel_job(%s)", (shared,))
    # No lender left above their own priorities, but the parent: itself waiting, it still lends
    # its own 2 to the grandparent.
    assert [job(conn, i)["effective_priority"] for i in (grandparent, parent, other_root)] == [2, None, None]


def test_lenders_cancelled_with_a_dead_parent_withdraw_from_their_other_ancestors(
        conn: psycopg.Connection[Any]) -> None:
    # child (5) waits on a and b; a dies: the child is cancelled and b, still queued, comes down.
    a, worker = running(conn, priority=1, max_attempts=1)
    b = insert_job(conn, priority=1)
    child = enqueue(conn, depends_on=[a, b], priority=5)
    assert job(conn, b)["effective_priority"] == 5
    conn.execute("SELECT pgq.fail_job(%s, %s, 1, 'E', 'boom', p_fatal => true)", (a, worker))
    assert job(conn, a)["status"] == "dead" and job(conn, child)["status"] == "cancelled"
    assert job(conn, b)["effective_priority"] is None
    # Requeued with its dependents, the child waits again and lends again.
    conn.execute("SELECT * FROM pgq.requeue_dead_jobs_v2(ARRAY[%s]::bigint[], p_with_dependents => true)", (a,))
    assert job(conn, child)["status"] == "waiting"
    assert [job(conn, i)["effective_priority"] for i in (a, b)] == [5, 5]


def test_withdrawing_only_ever_lowers(conn: psycopg.Connection[Any]) -> None:
    parent = insert_job(conn, priority=1)
    lender = enqueue(conn, depends_on=[parent], priority=3)
    conn.execute("UPDATE pgq.jobs SET effective_priority = 2 WHERE id = %s", (parent,))  # below its lender
    assert conn.execute("SELECT pgq.withdraw_priority(%s::bigint[])", ([lender],)).fetchone() == (0,)
    assert job(conn, parent)["effective_priority"] == 2


@pytest.mark.parametrize("first", ["lend", "withdraw"])
def test_a_lend_concurrent_with_a_withdrawal_is_never_lost(
        conn: psycopg.Connection[Any], connect: Callable[..., psycopg.Connection[Any]], first: str) -> None:
    # A parent holds 3, lent by a waiting child. One transaction cancels that child (withdraw),
    # another enqueues a new child of priority 5 (lend); whichever takes the parent's row first,
    # the other waits for it, and the parent ends at 5. The case this guards against: a
    # withdrawal that read the lenders before it waited for the row, and then wrote what it had
    # read over the lend committed meanwhile (withdraw_priority reads them after the lock).
    parent = insert_job(conn, priority=1)
    three = enqueue(conn, depends_on=[parent], priority=3)
    assert job(conn, parent)["effective_priority"] == 3
    holder, other = connect(autocommit=False), connect()
    if first == "lend":
        enqueue(holder, depends_on=[parent], priority=5)  # raised and row locked, not committed
        statement, args = "SELECT pgq.cancel_job(%s)", (three,)
    else:
        holder.execute("SELECT pgq.cancel_job(%s)", (three,))  # lowered and row locked, not committed
        statement, args = ("SELECT pgq.enqueue_job_v2('t', p_priority => 5, p_depends_on => %s::bigint[])",
                           ([parent],))
    errors: list[BaseException] = []

    def second() -> None:
        try:
            other.execute(statement, args)
        except BaseException as exc:  # reported below
            errors.append(exc)

    waiter = threading.Thread(target=second)
    waiter.start()
    eventually(lambda: conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
        (other.info.backend_pid,)).fetchone()[0], "the second transaction to wait for the parent's row")
    holder.commit()
    waiter.join()
    assert errors == []
    assert job(conn, three)["status"] == "cancelled"
    assert job(conn, parent)["effective_priority"] == 5


# ---------------------------------------------------------------- bad graphs


@pytest.mark.parametrize(("edges", "match"), [
    ([(1, None, 1)], "depends on itself"),
    ([(1, None, 2)], "comes after it"),
    ([(1, None, 2), (2, None, 1)], "comes after it"),
    ([(2, None, 3)], "not a job of this call"),
    ([(3, None, 1)], "not a job of this call"),
    ([(2, 1, 1)], "exactly one of"),
    ([(2, None, None)], "exactly one of"),
    ([(2, 999_999, None)], "parent job 999999 does not exist"),
])
def test_bad_graphs_raise_pq006_and_write_nothing(conn: psycopg.Connection[Any], edges: list[Any],
                                                   match: str) -> None:
    insert_job(conn)
    before = factories.snapshot(conn)
    with raises_sqlstate("PQ006", match=match):
        graph(conn, 2, edges)
    assert factories.snapshot(conn) == before


def test_more_than_1000_parents_are_refused_and_1000_are_enough(conn: psycopg.Connection[Any]) -> None:
    parents = factories.insert_jobs(conn, 1001)
    before = factories.snapshot(conn)
    with raises_sqlstate("PQ006", match="1001 parents; at most 1000"):
        enqueue(conn, depends_on=parents)
    assert factories.snapshot(conn) == before
    assert job(conn, enqueue(conn, depends_on=parents[:1000]))["status"] == "waiting"


def test_a_parent_enqueued_by_a_transaction_not_yet_committed_is_refused(
    conn: psycopg.Connection[Any], connect: Callable[..., psycopg.Connection[Any]],
) -> None:
    # So a cycle cannot form across calls either: a parent must exist (committed) first.
    other = connect(autocommit=False)
    pending = enqueue(other)
    with raises_sqlstate("PQ006", match=f"parent job {pending} does not exist"):
        enqueue(conn, depends_on=[pending])
    other.rollback()


def test_a_unique_key_on_a_job_referenced_in_the_same_call_is_refused(conn: psycopg.Connection[Any]) -> None:
    with raises_sqlstate("PQ006", match="has a unique_key"):
        conn.execute("SELECT * FROM pgq.enqueue_jobs_v2('{a,b}', '{\"{}\",\"{}\"}', p_unique_keys => '{k,NULL}',"
                     " p_dep_child => '{2}', p_dep_parent_id => '{NULL}', p_dep_parent_ord => '{1}')")
    assert factories.table_counts(conn)["jobs"] == 0


# ---------------------------------------------------------------- release


def test_completing_the_last_parent_queues_the_child_in_the_same_transaction(
    conn: psycopg.Connection[Any], drain_notifications: Callable[[], list[tuple[str, str]]],
) -> None:
    first, worker = running(conn)
    second = insert_job(conn, status="running", worker_id=worker)
    child = enqueue(conn, depends_on=[first, second], queue="children")
    drain_notifications()
    assert complete(conn, first, worker) == [first]
    assert job(conn, child)["status"] == "waiting"
    assert drain_notifications() == []
    conn.execute("BEGIN")
    assert complete(conn, second, worker) == [second]
    assert job(conn, child)["status"] == "queued"  # inside the completing transaction
    completed_at = conn.execute("SELECT now()").fetchone()
    conn.execute("COMMIT")
    assert completed_at is not None and job(conn, child)["run_at"] >= completed_at[0]
    assert drain_notifications() == [("pgq_job_available", "children")]


def test_a_stale_completion_releases_nothing(conn: psycopg.Connection[Any]) -> None:
    parent, worker = running(conn)
    child = enqueue(conn, depends_on=[parent])
    assert conn.execute("SELECT * FROM pgq.complete_jobs(%s, %s::bigint[], '{2}')", (worker, [parent])).fetchall() == []
    assert job(conn, child)["status"] == "waiting"


def _blocked_on_a_lock(conn: psycopg.Connection[Any], pid: int) -> bool:
    row = conn.execute("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return bool(row and row[0])


@pytest.mark.parametrize("first_commits", [True, False])
def test_two_parents_completed_in_concurrent_transactions_release_the_child_exactly_once(
    conn: psycopg.Connection[Any], connect: Callable[..., psycopg.Connection[Any]], first_commits: bool,
) -> None:
    a, worker = running(conn)
    b = insert_job(conn, status="running", worker_id=worker)
    child = enqueue(conn, depends_on=[a, b])
    one, two = connect(autocommit=False), connect(autocommit=False)
    assert complete(one, a, worker) == [a]  # open: holds the child's lock
    result: list[Any] = []

    def second() -> None:
        try:
            result.append(complete(two, b, worker))
            two.commit()
        except BaseException as exc:  # reported below
            result.append(exc)

    thread = threading.Thread(target=second)
    thread.start()
    eventually(lambda: _blocked_on_a_lock(conn, two.info.backend_pid), "the second completion waits for the child")
    if first_commits:
        one.commit()
    else:
        one.rollback()
    thread.join(10)
    assert result == [[b]]
    # Committed: both parents completed, so the child runs. Rolled back: a is running again.
    assert job(conn, child)["status"] == ("queued" if first_commits else "waiting")


def test_a_child_enqueued_while_its_parent_completes_is_released(
    conn: psycopg.Connection[Any], connect: Callable[..., psycopg.Connection[Any]],
) -> None:
    parent, worker = running(conn)
    producer, finisher = connect(autocommit=False), connect(autocommit=False)
    child = enqueue(producer, depends_on=[parent])  # open: the parent is locked, the child waiting
    result: list[Any] = []

    def finish() -> None:
        try:
            result.append(complete(finisher, parent, worker))
            finisher.commit()
        except BaseException as exc:  # reported below
            result.append(exc)

    thread = threading.Thread(target=finish)
    thread.start()
    eventually(lambda: _blocked_on_a_lock(conn, finisher.info.backend_pid), "the completion waits for the enqueue")
    producer.commit()
    thread.join(10)
    assert result == [[parent]]
    assert job(conn, child)["status"] == "queued"


def test_a_parent_completed_before_the_enqueue_commits_counts_as_completed(
    conn: psycopg.Connection[Any], connect: Callable[..., psycopg.Connection[Any]],
) -> None:
    parent, worker = running(conn)
    finisher = connect(autocommit=False)
    assert complete(finisher, parent, worker) == [parent]  # open: the parent's row is locked
    producer = connect()
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(enqueue(producer, depends_on=[parent])))
    thread.start()
    eventually(lambda: _blocked_on_a_lock(conn, producer.info.backend_pid), "the enqueue waits for the parent")
    finisher.commit()
    thread.join(10)
    assert len(result) == 1 and job(conn, result[0])["status"] == "queued"


# ---------------------------------------------------------------- failure propagation


def _fail(conn: psycopg.Connection[Any], job_id: int, worker: uuid.UUID, *, fatal: bool, attempt: int = 1) -> str:
    """fail_job, then the job's status (as this connection sees it)."""
    row = conn.execute("SELECT pgq.fail_job(%s, %s, %s, 'Boom', 'it broke', NULL, NULL, %s)",
                       (job_id, worker, attempt, fatal)).fetchone()
    assert row == (True,)
    return str(job(conn, job_id)["status"])


def test_a_parent_that_ends_dead_cancels_its_waiting_descendants_with_the_reason(
    conn: psycopg.Connection[Any],
) -> None:
    parent, worker = running(conn, max_attempts=2)
    other = insert_job(conn)
    child, grandchild, sibling = graph(conn, 3, [(1, parent, None), (2, None, 1), (2, other, None), (3, other, None)])
    assert _fail(conn, parent, worker, fatal=False) == "retrying"  # attempts left: nothing happens below
    assert [job(conn, i)["status"] for i in (child, grandchild)] == ["waiting", "waiting"]
    conn.execute("UPDATE pgq.jobs SET status = 'running', attempts = 2, started_at = now() WHERE id = %s", (parent,))
    assert _fail(conn, parent, worker, fatal=False, attempt=2) == "dead"
    for descendant in (child, grandchild):
        row = job(conn, descendant)
        assert row["status"] == "cancelled" and row["finished_at"] is not None
        assert row["last_error"] == f"cancelled: job {parent}, which it depends on, is dead"
    assert job(conn, sibling)["status"] == "waiting"  # not below the dead job
    assert factories.executions(conn, child) == []  # it never ran


def test_cancelling_a_parent_cancels_its_waiting_descendants_and_not_finished_ones(
    conn: psycopg.Connection[Any],
) -> None:
    parent = insert_job(conn)
    child = enqueue(conn, depends_on=[parent])
    done_child = enqueue(conn, depends_on=[parent])
    conn.execute("UPDATE pgq.jobs SET status = 'completed', finished_at = now() WHERE id = %s", (done_child,))
    grandchild = enqueue(conn, depends_on=[child])
    assert conn.execute("SELECT pgq.cancel_job(%s)", (parent,)).fetchone() == (True,)
    assert [job(conn, i)["status"] for i in (child, grandchild, done_child)] == ["cancelled", "cancelled", "completed"]
    assert job(conn, grandchild)["last_error"] == f"cancelled: job {parent}, which it depends on, is cancelled"


def test_a_child_is_released_or_cancelled_never_both_when_its_parents_complete_and_die_together(
    conn: psycopg.Connection[Any], connect: Callable[..., psycopg.Connection[Any]],
) -> None:
    good, worker = running(conn)
    bad = insert_job(conn, status="running", worker_id=worker, max_attempts=1)
    child = enqueue(conn, depends_on=[good, bad])
    finisher, failer = connect(autocommit=False), connect(autocommit=False)
    assert complete(finisher, good, worker) == [good]  # open: holds the child
    result: list[Any] = []
    thread = threading.Thread(target=lambda: (result.append(_fail(failer, bad, worker, fatal=True)),
                                              failer.commit()))
    thread.start()
    eventually(lambda: _blocked_on_a_lock(conn, failer.info.backend_pid), "the failure waits for the child")
    finisher.commit()
    thread.join(10)
    assert result == ["dead"]
    assert job(conn, child)["status"] == "cancelled"


def test_requeue_with_dependents_brings_the_cancelled_descendants_back_to_waiting(
    conn: psycopg.Connection[Any],
) -> None:
    parent, worker = running(conn, max_attempts=1)
    other_dead = insert_job(conn, status="dead")
    child, grandchild, stuck, stuck_child = graph(
        conn, 4, [(1, parent, None), (2, None, 1), (3, parent, None), (4, None, 3)])
    conn.execute("INSERT INTO pgq.job_dependencies (parent_id, child_id) VALUES (%s, %s)", (other_dead, stuck))
    user_cancelled = enqueue(conn, depends_on=[parent])
    conn.execute("SELECT pgq.cancel_job(%s)", (user_cancelled,))
    assert _fail(conn, parent, worker, fatal=False) == "dead"
    assert [job(conn, i)["status"] for i in (child, grandchild, stuck, stuck_child)] == ["cancelled"] * 4
    assert [r[0] for r in conn.execute("SELECT * FROM pgq.requeue_dead_jobs_v2(%s, p_with_dependents => true)",
                                       ([parent],))] == [parent]
    assert job(conn, parent)["status"] == "queued"
    for restored in (child, grandchild):
        assert (job(conn, restored)["status"], job(conn, restored)["last_error"],
                job(conn, restored)["finished_at"]) == ("waiting", None, None)
    # Another parent is still dead: cancelled again, and its child with it.
    assert job(conn, stuck)["status"] == "cancelled"
    assert job(conn, stuck)["last_error"] == f"cancelled: job {other_dead}, which it depends on, is dead"
    assert job(conn, stuck_child)["status"] == "cancelled"
    assert job(conn, user_cancelled)["status"] == "cancelled"  # cancelled on purpose: stays
    # Without the flag, nothing below moves.
    child2 = enqueue(conn, depends_on=[parent])
    conn.execute("UPDATE pgq.jobs SET status = 'running', worker_id = %s, attempts = 1, started_at = now()"
                 " WHERE id = %s", (worker, parent))
    assert _fail(conn, parent, worker, fatal=True) == "dead"
    conn.execute("SELECT * FROM pgq.requeue_dead_jobs_v2(%s)", ([parent],))
    assert job(conn, child2)["status"] == "cancelled"


# ---------------------------------------------------------------- job_blockers


def test_job_blockers_says_why_each_job_is_not_running(conn: psycopg.Connection[Any], now: Any) -> None:
    import datetime as dt

    running_parent, _worker = running(conn)
    done = insert_job(conn, status="completed")
    queued_parent = insert_job(conn)
    child = enqueue(conn, depends_on=[running_parent, done, queued_parent])
    later = insert_job(conn, run_at=now + dt.timedelta(hours=1))
    backoff = insert_job(conn, status="retrying", run_at=now + dt.timedelta(hours=1))
    due_retry = insert_job(conn, status="retrying", run_at=now - dt.timedelta(seconds=1))
    rows = {r[0]: r[1:] for r in conn.execute(
        "SELECT job_id, status::text, reason, waiting_on, parent_statuses FROM pgq.job_blockers")}
    assert rows[child] == ("waiting", "waiting on parent", sorted([running_parent, queued_parent]),
                           [s for _, s in sorted([(running_parent, "running"), (queued_parent, "queued")])])
    assert rows[later] == ("queued", "not yet due", None, None)
    assert rows[backoff] == ("retrying", "retrying backoff", None, None)
    assert rows[due_retry] == ("retrying", "runnable", None, None)
    assert rows[queued_parent] == ("queued", "runnable", None, None)
    assert running_parent not in rows and done not in rows  # running or finished: not blocked
    one = conn.execute("SELECT reason FROM pgq.job_blockers WHERE job_id = %s", (child,)).fetchall()
    assert one == [("waiting on parent",)]
