"""Production Redis topologies under running workers (issue 14): Redis Cluster with a
node killed and restarted empty, and a Sentinel failover.

Each scenario owns its redis-server processes (``tests/redis_topology.py``),
runs real workers over several queues, injects the fault mid-run and ends with
the audit of the Redis failure tests: every job completed, each handler ran
exactly once, one completed execution per job, no second attempt (so no
concurrent double execution and no stale completion). On a Cluster each queue's
keys live in a slot of their own (SPEC §12): the queues spread across the nodes,
and a dead node sends only its queues' pops to Postgres until the reconciler
rebuilds their ready sets on the restarted, empty node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import pgq
from factories import eventually
from redis_service import accelerated, unique_prefix
from redis_topology import OwnedCluster, OwnedSentinel
from test_redis_failures import Counting, audit, extra

from pgq.redis.keys import Keys

pytestmark = [pytest.mark.integration, pytest.mark.redis, pytest.mark.chaos]

QUEUES = [f"q{i}" for i in range(8)]


class MultiQueue(Counting):
    """``Counting`` over ``QUEUES``: job n goes to queue n % len(QUEUES); ``total`` counts them."""

    total = 0

    def enqueue(self, start: int, count: int) -> list[int]:
        self.total = max(self.total, start + count)
        return self.q.enqueue_many([{"task": "t", "payload": {"n": n}, "queue": QUEUES[n % len(QUEUES)]}
                                    for n in range(start, start + count)])

    def add(self, count: int) -> None:
        self.enqueue(self.total, count)


def back_on_redis(c: MultiQueue, runs: list[Any]) -> None:
    """Enqueue 40 jobs at a time until the workers claim through Redis again (their
    circuit breakers close up to 5 s after Redis answers; a burst enqueued before that
    all goes through Postgres)."""
    before = extra(runs, "redis_claimed")

    def claimed() -> bool:
        if extra(runs, "redis_claimed") > before:
            return True
        c.add(40)
        return False

    eventually(claimed, "claims through Redis again", timeout=60)


def start_workers(c: Counting, running: Callable[..., Any]) -> list[Any]:
    """Two workers of every queue (the multi-queue pop), one of q0 alone (the one-script pop)."""
    return [running(c.q.worker(queues=QUEUES, concurrency=8, install_signal_handlers=False)) for _ in range(2)] + \
        [running(c.q.worker(queues=["q0"], concurrency=4, install_signal_handlers=False))]


@pytest.fixture
def cluster() -> Iterator[OwnedCluster]:
    owned = OwnedCluster(3)
    try:
        yield owned.start()
    finally:
        owned.stop()


@pytest.fixture
def sentinel() -> Iterator[OwnedSentinel]:
    owned = OwnedSentinel()
    try:
        yield owned.start()
    finally:
        owned.stop()


def test_cluster_queues_spread_and_a_lost_node_falls_back_to_postgres_and_comes_back(
    short_settings: pgq.Settings, cluster: OwnedCluster, conn: psycopg.Connection[Any], running: Callable[..., Any],
    pytestconfig: pytest.Config,
) -> None:
    rs = accelerated(short_settings, cluster.url, unique_prefix(), redis_poll_interval_seconds=600.0)
    keys = Keys(rs.redis_prefix, rs.schema)
    homes = {q: cluster.node_of(keys.ready(q)) for q in QUEUES}
    assert len({n.port for n in homes.values()}) >= 2, "the queues' slots must spread across the nodes"
    assert all(cluster.node_of(key).port == homes[q].port for q in QUEUES
               for key in (keys.wake(q), keys.popped("w", q), keys.built(q), keys.owners(q), keys.popped_at(q)))
    deployment = cluster.node_of(keys.mirror)
    # First a node that holds queues but not the deployment's keys (only its queues
    # are rebuilt), then the deployment's node (the whole mirror is rebuilt).
    victims = [next(n for n in cluster.nodes if n is not deployment and n in homes.values()), deployment]
    jobs = 4000 if pytestconfig.getoption("--chaos-long") else 1200
    c = MultiQueue(rs)
    c.enqueue(0, jobs)
    runs = start_workers(c, running)
    for victim in victims:
        eventually(lambda: extra(runs, "redis_claimed") >= 100, "claims through Redis", timeout=60)
        cluster.kill(victim)
        c.add(400)
        done = c.done
        eventually(lambda d=done: c.done >= d + 200, "the workers to carry on while a node is down", timeout=60)
        cluster.restart(victim)  # empty, same slots
        with cluster.client() as r:
            eventually(lambda: all(r.exists(keys.built(q)) for q in QUEUES) and r.exists(keys.mirror),
                       "the reconciler to rebuild the lost ready sets", timeout=60)
        back_on_redis(c, runs)
    audit(conn, c, c.total)
    assert extra(runs, "redis_unavailable") > 0  # the node was really gone for the workers
    for r in runs:
        r.stop()
    c.q.close()


def test_sentinel_failover_is_followed_and_loses_nothing(
    short_settings: pgq.Settings, sentinel: OwnedSentinel, conn: psycopg.Connection[Any], running: Callable[..., Any],
    pytestconfig: pytest.Config,
) -> None:
    rs = accelerated(short_settings, sentinel.url, unique_prefix(), redis_poll_interval_seconds=600.0)
    jobs = 4000 if pytestconfig.getoption("--chaos-long") else 1200
    c = MultiQueue(rs)
    c.enqueue(0, jobs)
    runs = start_workers(c, running)
    eventually(lambda: extra(runs, "redis_claimed") >= 100, "claims through Redis", timeout=60)
    old = sentinel.master.port
    sentinel.fail_over()
    assert sentinel.master.port != old
    c.add(400)
    back_on_redis(c, runs)  # the workers found the promoted replica through the sentinels
    with sentinel.master.client() as r:
        assert r.info("replication")["role"] == "master"
        assert r.exists(Keys(rs.redis_prefix, rs.schema).mirror)
    audit(conn, c, c.total)
    for r in runs:
        r.stop()
    c.q.close()
