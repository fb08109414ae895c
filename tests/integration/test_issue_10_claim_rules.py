"""Issue 10, the claim's rules (revision 0012): effective priority, aging, limits, rates, fair share.

Every rule is decided in Postgres by the claim functions (``lock_runnable_jobs``
-> ``lock_plain_jobs`` / ``lock_policy_jobs`` / ``lock_group_jobs``), so these
tests call the SQL with ``p_now`` instead of waiting: time moves because the
test says so. The window between two claims is tested with two real
connections: a claim that has not committed holds the queue's rule row, so a
second claim waits for it and then counts its jobs as running.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from factories import insert_job, insert_worker, raises_sqlstate

pytestmark = pytest.mark.integration

Conn = psycopg.Connection[Any]


def claim(conn: Conn, worker_id: uuid.UUID, queues: list[str], max_jobs: int = 10,
          at: dt.datetime | None = None) -> list[int]:
    """Claim through get_runnable_jobs_v2 at ``at``; the ids in the order returned (claim order)."""
    rows = conn.execute("SELECT id FROM pgq.get_runnable_jobs_v2(%s, %s, %s, 0, NULL, coalesce(%s, now()))",
                        (queues, worker_id, max_jobs, at)).fetchall()
    return [r[0] for r in rows]


def group_jobs(conn: Conn, queue: str, groups: dict[str | None, int], *, priority: int = 3,
               run_at: dt.datetime | None = None) -> dict[int, str | None]:
    """Insert ``groups[g]`` queued jobs of each group ``g`` (None: no group); job id -> group."""
    out: dict[int, str | None] = {}
    for group, count in groups.items():
        rows = conn.execute(
            "INSERT INTO pgq.jobs (task, queue, priority, group_key, run_at)"
            " SELECT 'noop', %s, %s, %s, coalesce(%s::timestamptz, now()) FROM generate_series(1, %s)"
            " RETURNING id", (queue, priority, group, run_at, count)).fetchall()
        out.update({r[0]: group for r in rows})
    return out


def set_policy(conn: Conn, queue: str, **rules: Any) -> None:
    args = ", ".join(f"p_{name} => %s" for name in rules)
    conn.execute(f"SELECT pgq.set_queue_policy(%s, {args})", (queue, *rules.values()))


def finish(conn: Conn, job_ids: list[int]) -> None:
    conn.execute("UPDATE pgq.jobs SET status = 'completed', finished_at = now() WHERE id = ANY (%s)", (job_ids,))


# ---------------------------------------------------------------- effective priority and aging


def test_claim_orders_by_effective_priority(conn: Conn) -> None:
    worker = insert_worker(conn, queues=["q"])
    low = insert_job(conn, queue="q", priority=1)
    mid = insert_job(conn, queue="q", priority=3)
    conn.execute("UPDATE pgq.jobs SET effective_priority = 5 WHERE id = %s", (low,))  # lent by a waiting child
    assert claim(conn, worker, ["q"], 2) == [low, mid]
    assert conn.execute("SELECT priority FROM pgq.jobs WHERE id = %s", (low,)).fetchone() == (1,)  # its own stays


def test_aging_raises_one_band_per_step_up_to_five(conn: Conn, now: dt.datetime) -> None:
    set_policy(conn, "q", aging_step=dt.timedelta(seconds=10))
    jobs = {waited: insert_job(conn, queue="q", priority=1, run_at=now - dt.timedelta(seconds=waited))
            for waited in (5, 10, 25, 39, 40, 400)}
    fresh_top = insert_job(conn, queue="q", priority=5, run_at=now)
    # Every job but the one that waited less than a step (5 s) is raised.
    assert conn.execute("SELECT pgq.age_jobs(%s)", (now,)).fetchone() == (5,)
    bands = dict(conn.execute("SELECT id, greatest(priority, effective_priority) FROM pgq.jobs"
                              " WHERE id = ANY (%s)", (list(jobs.values()),)).fetchall())
    assert {w: bands[j] for w, j in jobs.items()} == {5: 1, 10: 2, 25: 3, 39: 4, 40: 5, 400: 5}
    # Aged to the top band, the oldest come first, before the fresh priority-5 job.
    worker = insert_worker(conn, queues=["q"])
    assert claim(conn, worker, ["q"], 3, at=now) == [jobs[400], jobs[40], fresh_top]
    # Never lowered; a second run at the same time raises nothing.
    assert conn.execute("SELECT pgq.age_jobs(%s)", (now,)).fetchone() == (0,)


def test_aging_leaves_queues_without_a_step_alone(conn: Conn, now: dt.datetime) -> None:
    old = insert_job(conn, queue="plain", priority=1, run_at=now - dt.timedelta(days=1))
    set_policy(conn, "other", aging_step=dt.timedelta(seconds=1))
    assert conn.execute("SELECT pgq.age_jobs(%s)", (now,)).fetchone() == (0,)
    assert conn.execute("SELECT effective_priority FROM pgq.jobs WHERE id = %s", (old,)).fetchone() == (None,)


# ---------------------------------------------------------------- concurrency limits


def test_max_running_counts_running_jobs_and_a_finished_job_frees_its_slot(conn: Conn) -> None:
    set_policy(conn, "q", max_running=3)
    worker = insert_worker(conn, queues=["q"])
    group_jobs(conn, "q", {None: 10})
    first = claim(conn, worker, ["q"], 10)
    assert len(first) == 3
    assert claim(conn, worker, ["q"], 10) == []
    finish(conn, first[:1])
    assert len(claim(conn, worker, ["q"], 10)) == 1


def test_a_rescued_job_frees_its_slot(conn: Conn, now: dt.datetime) -> None:
    set_policy(conn, "q", max_running=2)
    dying = insert_worker(conn, queues=["q"], last_heartbeat=now)
    group_jobs(conn, "q", {None: 4}, run_at=now)
    assert len(claim(conn, dying, ["q"], 10, at=now)) == 2
    healthy = insert_worker(conn, queues=["q"], last_heartbeat=now + dt.timedelta(minutes=5))
    assert claim(conn, healthy, ["q"], 10, at=now + dt.timedelta(minutes=5)) == []
    conn.execute("SELECT pgq.mark_stale_workers(interval '90 seconds', %s)", (now + dt.timedelta(minutes=5),))
    assert len(claim(conn, healthy, ["q"], 10, at=now + dt.timedelta(minutes=5))) == 2


def test_a_claim_in_flight_holds_the_slots_it_took(connect: Callable[..., Conn]) -> None:
    """The window between two claims: without the rule row's lock the second claim would
    count the first one's jobs as not running (not committed yet) and take the limit again."""
    setup = connect()
    set_policy(setup, "q", max_running=3)
    worker = insert_worker(setup, queues=["q"])
    group_jobs(setup, "q", {None: 10})
    first = connect(autocommit=False)
    assert len(claim(first, worker, ["q"], 2)) == 2  # not committed: the rule row stays locked
    second = connect()
    got: list[list[int]] = []
    waiting = threading.Thread(target=lambda: got.append(claim(second, worker, ["q"], 10)))
    waiting.start()
    waiting.join(0.5)
    assert waiting.is_alive(), "the second claim must wait for the first one's commit"
    first.commit()
    waiting.join(10)
    assert [len(g) for g in got] == [1]
    assert setup.execute("SELECT count(*) FROM pgq.jobs WHERE status = 'running'").fetchone() == (3,)


def test_group_max_running_limits_each_group_and_jobs_without_a_group_together(conn: Conn) -> None:
    set_policy(conn, "q", group_max_running=2)
    worker = insert_worker(conn, queues=["q"])
    groups = group_jobs(conn, "q", {"a": 5, "b": 5, None: 5})
    taken = claim(conn, worker, ["q"], 20)
    assert Counter(groups[j] for j in taken) == {"a": 2, "b": 2, None: 2}
    finish(conn, [j for j in taken if groups[j] == "b"][:1])
    assert [groups[j] for j in claim(conn, worker, ["q"], 20)] == ["b"]


def test_queue_and_group_limits_together(conn: Conn) -> None:
    set_policy(conn, "q", max_running=3, group_max_running=2)
    worker = insert_worker(conn, queues=["q"])
    groups = group_jobs(conn, "q", {"a": 5, "b": 5})
    taken = claim(conn, worker, ["q"], 20)
    assert len(taken) == 3 and max(Counter(groups[j] for j in taken).values()) == 2


# ---------------------------------------------------------------- rate limits


def test_rate_limit_is_a_token_bucket(conn: Conn, now: dt.datetime) -> None:
    set_policy(conn, "q", rate_limit=5, rate_period=dt.timedelta(seconds=10))
    worker = insert_worker(conn, queues=["q"])
    group_jobs(conn, "q", {None: 50}, run_at=now)
    at = [now + dt.timedelta(seconds=s) for s in (0, 1, 2, 4, 1000)]
    got = [len(claim(conn, worker, ["q"], 10, at=t)) for t in at]
    # A burst of 5; then one token per 2 s (0.5 at +1 s); the bucket holds at most 5.
    assert got == [5, 0, 1, 1, 5]


def test_rate_limit_over_a_simulated_minute(conn: Conn, now: dt.datetime) -> None:
    """Claims every 50 ms of database time for 60 s at 20 per second: 1200 starts plus the burst."""
    set_policy(conn, "q", rate_limit=20, rate_period=dt.timedelta(seconds=1))
    worker = insert_worker(conn, queues=["q"])
    group_jobs(conn, "q", {None: 1400}, run_at=now)
    total = sum(len(claim(conn, worker, ["q"], 50, at=now + dt.timedelta(milliseconds=50 * i))) for i in range(1201))
    assert 1200 <= total <= 1200 + 20


def test_group_rate_limit_gives_each_group_its_own_bucket(conn: Conn, now: dt.datetime) -> None:
    set_policy(conn, "q", group_rate_limit=2, group_rate_period=dt.timedelta(seconds=10))
    worker = insert_worker(conn, queues=["q"])
    groups = group_jobs(conn, "q", {"a": 5, "b": 5}, run_at=now)
    assert Counter(groups[j] for j in claim(conn, worker, ["q"], 10, at=now)) == {"a": 2, "b": 2}
    assert claim(conn, worker, ["q"], 10, at=now + dt.timedelta(seconds=1)) == []
    assert Counter(groups[j] for j in claim(conn, worker, ["q"], 10, at=now + dt.timedelta(seconds=5))) == \
        {"a": 1, "b": 1}


# ---------------------------------------------------------------- fair share


def test_fair_share_follows_the_weights(conn: Conn) -> None:
    set_policy(conn, "q", fair_share=True)
    conn.execute("SELECT pgq.set_group_weight('q', 'big', 3)")
    worker = insert_worker(conn, queues=["q"])
    groups = group_jobs(conn, "q", {"big": 400, "small": 400})
    taken = [j for _ in range(20) for j in claim(conn, worker, ["q"], 8)]
    counts = Counter(groups[j] for j in taken)
    assert counts == {"big": 120, "small": 40}


def test_a_trickle_is_not_stuck_behind_a_backlog(conn: Conn, now: dt.datetime) -> None:
    set_policy(conn, "q", fair_share=True)
    worker = insert_worker(conn, queues=["q"])
    group_jobs(conn, "q", {"flood": 5000}, run_at=now - dt.timedelta(minutes=5))
    for _ in range(5):
        claim(conn, worker, ["q"], 10)
    trickle = group_jobs(conn, "q", {"trickle": 1})
    assert set(trickle) <= set(claim(conn, worker, ["q"], 10))  # the very next claim takes it


def test_an_idle_group_does_not_bank_credit(conn: Conn) -> None:
    set_policy(conn, "q", fair_share=True)
    worker = insert_worker(conn, queues=["q"])
    groups = group_jobs(conn, "q", {"a": 300})
    for _ in range(10):
        claim(conn, worker, ["q"], 10)  # "a" alone: its virtual time runs ahead
    groups |= group_jobs(conn, "q", {"b": 300})
    taken = [j for _ in range(10) for j in claim(conn, worker, ["q"], 10)]
    counts = Counter(groups[j] for j in taken)
    assert abs(counts["a"] - counts["b"]) <= 2, counts  # b starts level, it does not take 100 in a row


def test_without_fair_share_groups_follow_claim_order(conn: Conn, now: dt.datetime) -> None:
    set_policy(conn, "q", group_max_running=100)
    worker = insert_worker(conn, queues=["q"])
    old = group_jobs(conn, "q", {"a": 3}, run_at=now - dt.timedelta(minutes=1))
    group_jobs(conn, "q", {"b": 3})
    assert claim(conn, worker, ["q"], 3) == sorted(old)


# ---------------------------------------------------------------- several queues, Redis claims, blockers


def test_ruled_and_plain_queues_in_one_claim(conn: Conn) -> None:
    set_policy(conn, "limited", max_running=1)
    worker = insert_worker(conn, queues=["limited", "plain"])
    group_jobs(conn, "limited", {None: 5})
    group_jobs(conn, "plain", {None: 5})
    taken = claim(conn, worker, ["limited", "plain"], 10)
    queues = Counter(conn.execute("SELECT queue FROM pgq.jobs WHERE id = %s", (j,)).fetchone()[0] for j in taken)
    assert queues == {"limited": 1, "plain": 5}


def test_claims_by_id_leave_queues_with_a_policy_to_postgres(conn: Conn) -> None:
    worker = insert_worker(conn, queues=["q"])
    ids = list(group_jobs(conn, "q", {None: 3}))
    set_policy(conn, "q", aging_step=dt.timedelta(minutes=1))
    rows = conn.execute("SELECT id FROM pgq.claim_jobs_v2(%s::bigint[], %s, 0, NULL)", (ids, worker)).fetchall()
    assert rows == []
    assert conn.execute("SELECT count(*) FROM pgq.runnable_jobs_after('-infinity', 0)").fetchone() == (0,)
    conn.execute("SELECT pgq.clear_queue_policy('q')")
    assert conn.execute("SELECT count(*) FROM pgq.runnable_jobs_after('-infinity', 0)").fetchone() == (3,)


@pytest.mark.parametrize("rules, fill, reason", [
    ({"max_running": 1}, "queue", "queue max_running"),
    ({"rate_limit": 1, "rate_period": dt.timedelta(hours=1)}, "queue", "queue rate limit"),
    ({"group_max_running": 1}, "group", "group max_running"),
    ({"group_rate_limit": 1, "group_rate_period": dt.timedelta(hours=1)}, "group", "group rate limit"),
])
def test_job_blockers_names_the_rule(conn: Conn, rules: dict[str, Any], fill: str, reason: str) -> None:
    set_policy(conn, "q", **rules)
    worker = insert_worker(conn, queues=["q"])
    groups = group_jobs(conn, "q", {"a": 2, "b": 1})
    taken = claim(conn, worker, ["q"], 1)
    waiting_a = [j for j, g in groups.items() if g == "a" and j not in taken]
    b = [j for j, g in groups.items() if g == "b"]
    assert conn.execute("SELECT reason FROM pgq.job_blockers WHERE job_id = %s", (waiting_a[0],)).fetchone() == \
        (reason,)
    other_group = conn.execute("SELECT reason FROM pgq.job_blockers WHERE job_id = %s", (b[0],)).fetchone()
    assert other_group == ((reason,) if fill == "queue" else ("runnable",))


def test_job_blockers_names_a_paused_queue(conn: Conn) -> None:
    job = insert_job(conn, queue="q")
    conn.execute("SELECT pgq.pause_queue('q')")
    assert conn.execute("SELECT reason FROM pgq.job_blockers WHERE job_id = %s", (job,)).fetchone() == \
        ("queue paused",)


def test_queue_policy_usage_shows_rules_and_use(conn: Conn) -> None:
    set_policy(conn, "q", max_running=4, rate_limit=10, rate_period=dt.timedelta(hours=1), fair_share=True)
    worker = insert_worker(conn, queues=["q"])
    group_jobs(conn, "q", {"a": 3, "b": 3})
    claim(conn, worker, ["q"], 3)
    row = conn.execute("SELECT max_running, running, rate_limit, tokens < 8, fair_share, runnable, groups_with_state"
                       " FROM pgq.queue_policy_usage WHERE queue = 'q'").fetchone()
    assert row == (4, 3, 10, True, True, 3, 2)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("call, sqlstate", [
    ("SELECT pgq.set_queue_policy('q')", "PQ004"),
    ("SELECT pgq.set_queue_policy('q', p_max_running => 0)", "23514"),
    ("SELECT pgq.set_queue_policy('q', p_rate_limit => 5)", "23514"),
    ("SELECT pgq.set_queue_policy('q', p_rate_limit => 5, p_rate_period => interval '0 s')", "23514"),
    ("SELECT pgq.set_queue_policy('bad name', p_max_running => 1)", "23514"),
    ("SELECT pgq.set_queue_policy('q', p_aging_step => interval '-1 s')", "23514"),
    ("SELECT pgq.set_group_weight('nopolicy', 'a', 2)", "PQ004"),
])
def test_bad_rules_are_refused_and_change_nothing(conn: Conn, call: str, sqlstate: str) -> None:
    with raises_sqlstate(sqlstate):
        conn.execute(call)
    assert conn.execute("SELECT count(*) FROM pgq.queue_policies").fetchone() == (0,)


def test_bad_weight_is_refused(conn: Conn) -> None:
    set_policy(conn, "q", fair_share=True)
    with raises_sqlstate("23514"):
        conn.execute("SELECT pgq.set_group_weight('q', 'a', 0)")
    assert conn.execute("SELECT count(*) FROM pgq.group_states").fetchone() == (0,)
