"""Issue 10, the claim rules from Python and the CLI: ``Queue.set_queue_policy`` and
friends, ``group_key`` on every enqueue path, ``pgq queue policy|policies|weight``,
a worker in Redis mode on a queue with rules, and aging under a sustained
high-priority load that keeps the worker busy.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

import pgq
from pgq.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture
def q(settings: pgq.Settings) -> Iterator[pgq.Queue]:
    queue = pgq.connect(settings=settings, strict_tasks=False)
    yield queue
    queue.close()


def policy_rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT queue, max_running, rate_limit, extract(epoch FROM rate_period)::float8,"
                        " group_max_running, fair_share, extract(epoch FROM aging_step)::float8"
                        " FROM pgq.queue_policies ORDER BY queue").fetchall()


def test_set_replace_and_clear_a_policy(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    q.set_queue_policy("emails", max_running=10, rate_limit=100, rate_period=dt.timedelta(seconds=2))
    assert policy_rows(conn) == [("emails", 10, 100, 2.0, None, False, None)]
    q.set_queue_policy("emails", group_max_running=2, fair_share=True, aging_step=30)  # replaces every rule
    assert policy_rows(conn) == [("emails", None, None, None, 2, True, 30.0)]
    q.set_group_weight("emails", "tenant-a", 2.5)
    (usage,) = q.queue_policies()
    assert (usage.queue, usage.group_max_running, usage.fair_share, usage.aging_step, usage.groups_with_state) == \
        ("emails", 2, True, 30.0, 1)
    assert q.clear_queue_policy("emails") is True
    assert q.clear_queue_policy("emails") is False
    assert policy_rows(conn) == []
    assert conn.execute("SELECT count(*) FROM pgq.group_states").fetchone() == (0,)


@pytest.mark.parametrize("rules, match", [
    ({}, "at least one rule"),
    ({"max_running": 0}, "max_running"),
    ({"max_running": True}, "max_running"),
    ({"rate_limit": 5}, "together"),
    ({"rate_limit": 5, "rate_period": 0}, "rate_period"),
    ({"rate_limit": 5, "rate_period": float("nan")}, "rate_period"),
    ({"group_rate_limit": 5, "group_rate_period": 10 ** 6}, "group_rate_period"),
    ({"aging_step": -1}, "aging_step"),
    ({"fair_share": "yes"}, "fair_share"),
])
def test_bad_rules_raise_validation_error_and_change_nothing(
    q: pgq.Queue, conn: psycopg.Connection[Any], rules: dict[str, Any], match: str,
) -> None:
    with pytest.raises(pgq.ValidationError, match=match):
        q.set_queue_policy("emails", **rules)
    with pytest.raises(pgq.ValidationError, match="queue"):
        q.set_queue_policy("bad name", max_running=1)
    assert policy_rows(conn) == []


@pytest.mark.parametrize("args, match", [
    (("nopolicy", "a", 1.0), "no policy"),
    (("emails", "a", 0), "weight"),
    (("emails", "a", float("inf")), "weight"),
    (("emails", "x" * 201, 1.0), "group_key"),
])
def test_bad_weights_are_refused(q: pgq.Queue, conn: psycopg.Connection[Any], args: tuple[Any, ...],
                                 match: str) -> None:
    q.set_queue_policy("emails", fair_share=True)
    with pytest.raises(pgq.ValidationError, match=match):
        q.set_group_weight(*args)
    assert conn.execute("SELECT count(*) FROM pgq.group_states").fetchone() == (0,)


def test_group_key_on_every_enqueue_path(q: pgq.Queue, conn: psycopg.Connection[Any], db_url: str) -> None:
    single = q.enqueue("t", {}, group_key="tenant\t1")
    delayed = q.enqueue("t", {}, group_key="tenant-2", delay=5)
    many = q.enqueue_many([{"task": "t", "group_key": "a\\b\nc"}, {"task": "t"}, {"task": "t", "group_key": "b"}])
    with psycopg.connect(db_url) as tx:  # a caller's transaction (transactional enqueue)
        in_tx = q.enqueue_many([{"task": "t", "group_key": "c"}, {"task": "t", "group_key": "d"}], connection=tx)
    keys = dict(conn.execute("SELECT id, group_key FROM pgq.jobs").fetchall())
    assert [keys[i] for i in [single, delayed, *many, *in_tx]] == ["tenant\t1", "tenant-2", "a\\b\nc", None, "b",
                                                                  "c", "d"]


@pytest.mark.parametrize("options, match", [
    ({"group_key": ""}, "group_key"),
    ({"group_key": 5}, "group_key"),
    ({"group_key": "a\x00b"}, "NUL"),
    ({"group_key": "a", "unique_key": "k"}, "unique_key"),
    ({"group_key": "a", "depends_on": [1]}, "depends_on"),
])
def test_bad_group_keys_write_nothing(q: pgq.Queue, conn: psycopg.Connection[Any], options: dict[str, Any],
                                      match: str) -> None:
    with pytest.raises(pgq.ValidationError, match=match):
        q.enqueue("t", {}, **options)
    assert conn.execute("SELECT count(*) FROM pgq.jobs").fetchone() == (0,)


def test_cli_policy_policies_weight(settings: pgq.Settings, conn: psycopg.Connection[Any]) -> None:
    env = {"PGQ_DATABASE_URL": settings.database_url}
    runner = CliRunner()
    ok = runner.invoke(main, ["queue", "policy", "reports", "--max-running", "4", "--rate-limit", "10",
                              "--rate-period", "1", "--fair-share"], env=env)
    assert ok.exit_code == 0, ok.output
    assert runner.invoke(main, ["queue", "weight", "reports", "tenant-a", "3"], env=env).exit_code == 0
    listed = runner.invoke(main, ["queue", "policies", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.output)
    assert (row["queue"], row["max_running"], row["rate_limit"], row["rate_period"], row["fair_share"]) == \
        ("reports", 4, 10, 1.0, True)
    assert "reports" in runner.invoke(main, ["queue", "policies"], env=env).output
    bad = runner.invoke(main, ["queue", "policy", "reports", "--max-running", "0"], env=env)
    assert bad.exit_code != 0 and "max_running" in bad.output
    assert policy_rows(conn)[0][1] == 4  # unchanged by the refused call
    cleared = runner.invoke(main, ["queue", "policy", "reports", "--clear"], env=env)
    assert cleared.exit_code == 0 and "removed" in cleared.output
    assert policy_rows(conn) == []


@pytest.mark.redis
def test_a_redis_mode_worker_claims_a_ruled_queue_from_postgres(
    settings: pgq.Settings, redis_url: str, redis_prefix: str, conn: psycopg.Connection[Any],
) -> None:
    rq = pgq.connect(settings=settings.replace(redis_url=redis_url, redis_prefix=redis_prefix), strict_tasks=False)
    try:
        ran: list[int] = []

        @rq.task(name="t", queue="limited")
        def t(n: int) -> None:
            ran.append(n)

        rq.set_queue_policy("limited", max_running=1)
        rq.enqueue_many([{"task": "t", "payload": {"n": n}} for n in range(3)])
        worker = rq.worker(queues=["limited"], concurrency=4, install_signal_handlers=False, run_maintenance=False)
        claimed = [worker.run_once() for _ in range(3)]
        assert claimed == [1, 1, 1]  # one slot: one job per claim, although Redis offered all three
        assert sorted(ran) == [0, 1, 2]
        assert worker.counters.extra.get("redis_claimed", 0) == 0
        assert conn.execute("SELECT count(*) FROM pgq.jobs WHERE status = 'completed'").fetchone() == (3,)
    finally:
        rq.close()
