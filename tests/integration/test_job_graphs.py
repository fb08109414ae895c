"""Job graphs through the Python API, in both modes: ``enqueue(depends_on=...)``,
whole graphs in one ``enqueue_many`` with ``pgq.ref()``, typed errors for bad graphs,
and workers running a graph parents first (children released by the completion).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import factories
import pgq

pytestmark = [pytest.mark.integration, pytest.mark.both_modes]


@pytest.fixture
def q(short: pgq.Settings) -> Iterator[pgq.Queue]:
    queue = pgq.connect(settings=short, strict_tasks=False)
    yield queue
    queue.close()


def statuses(q: pgq.Queue, ids: list[int]) -> list[str]:
    return [q.get(i).status.value for i in ids]


def edges(conn: psycopg.Connection[Any]) -> set[tuple[int, int]]:
    return {(int(p), int(c)) for p, c in conn.execute("SELECT parent_id, child_id FROM pgq.job_dependencies")}


def test_enqueue_with_depends_on_waits_for_the_parents(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    parent = q.enqueue("t", priority=4)
    done = factories.insert_job(conn, status="completed")
    child = q.enqueue("t", depends_on=[parent, done])
    assert statuses(q, [parent, child]) == ["queued", "waiting"]
    assert q.get(child).priority == 4  # inherited
    assert q.get(q.enqueue("t", depends_on=[parent], priority=1)).priority == 1
    assert q.get(q.enqueue("t", depends_on=[done])).status is pgq.JobStatus.QUEUED
    assert edges(conn) >= {(parent, child), (done, child)}


def test_enqueue_many_takes_a_whole_graph_in_any_order_and_returns_ids_in_input_order(
    q: pgq.Queue, conn: psycopg.Connection[Any],
) -> None:
    existing = q.enqueue("t")
    # A diamond listed children first; job 3 also waits on an existing job.
    ids = q.enqueue_many([
        {"task": "join", "depends_on": [pgq.ref(1), pgq.ref(2)]},
        {"task": "left", "depends_on": [pgq.ref(3)]},
        {"task": "right", "depends_on": [pgq.ref(3)], "priority": 2},
        {"task": "root", "priority": 5, "depends_on": [existing]},
    ])
    assert [q.get(i).task for i in ids] == ["join", "left", "right", "root"]
    assert statuses(q, ids) == ["waiting"] * 4
    assert [q.get(i).priority for i in ids] == [5, 5, 2, 5]
    assert edges(conn) == {(ids[1], ids[0]), (ids[2], ids[0]), (ids[3], ids[1]), (ids[3], ids[2]), (existing, ids[3])}


def test_task_spec_takes_depends_on(q: pgq.Queue) -> None:
    @q.task(name="step")
    def step() -> None:
        return None

    ids = q.enqueue_many([step.spec(), step.spec(depends_on=[pgq.ref(0)])])
    assert statuses(q, ids) == ["queued", "waiting"]


@pytest.mark.parametrize(("jobs", "match"), [
    ([{"task": "a", "depends_on": [pgq.ref(1)]}, {"task": "b", "depends_on": [pgq.ref(0)]}], "form a cycle"),
    ([{"task": "a", "depends_on": [pgq.ref(0)]}], "depends on itself"),
    ([{"task": "a", "depends_on": [pgq.ref(5)]}], "out of range"),
    ([{"task": "a", "unique_key": "k"}, {"task": "b", "depends_on": [pgq.ref(0)]}], "has a unique_key"),
    ([{"task": "a", "depends_on": [10**12]}], "does not exist"),
    ([{"task": "a", "depends_on": "1"}], "must be a list"),
    ([{"task": "a", "depends_on": [0]}], "job ids"),
    ([{"task": "a", "depends_on": [True]}], "job ids"),
    ([{"task": "a", "depends_on": list(range(1, 1002))}], "at most 1000 parents"),
])
def test_bad_graphs_raise_invalid_graph_and_write_nothing(q: pgq.Queue, conn: psycopg.Connection[Any],
                                                          jobs: list[dict[str, Any]], match: str) -> None:
    q.enqueue("t")
    before = factories.snapshot(conn)
    with pytest.raises(pgq.InvalidGraph, match=match):
        q.enqueue_many([{"task": "ok"}, *[{**j, "depends_on": _shift(j.get("depends_on"))} for j in jobs]])
    assert factories.snapshot(conn) == before


def _shift(depends_on: Any) -> Any:
    """The cases are written for positions starting at 0; a plain job goes first in the call."""
    if not isinstance(depends_on, list):
        return depends_on
    return [pgq.ref(p.index + 1) if isinstance(p, pgq.Ref) else p for p in depends_on]


def test_enqueue_refuses_a_ref_and_a_bad_ref(q: pgq.Queue) -> None:
    with pytest.raises(pgq.InvalidGraph, match="enqueue_many"):
        q.enqueue("t", depends_on=[pgq.ref(0)])
    with pytest.raises(pgq.InvalidGraph):
        pgq.ref(-1)
    assert isinstance(pgq.InvalidGraph("x"), pgq.ValidationError)


def test_a_transactional_graph_exists_only_once_committed(q: pgq.Queue, connect: Any) -> None:
    tx = connect(autocommit=False)
    ids = q.enqueue_many([{"task": "a"}, {"task": "b", "depends_on": [pgq.ref(0)]}], connection=tx)
    tx.rollback()
    for job_id in ids:
        with pytest.raises(pgq.JobNotFound):
            q.get(job_id)


def test_workers_run_a_graph_parents_first(q: pgq.Queue) -> None:
    order: list[str] = []

    @q.task(name="step")
    def step(name: str) -> None:
        order.append(name)

    ids = q.enqueue_many([
        step.spec({"name": "root"}),
        step.spec({"name": "left"}, depends_on=[pgq.ref(0)]),
        step.spec({"name": "right"}, depends_on=[pgq.ref(0)]),
        step.spec({"name": "join"}, depends_on=[pgq.ref(1), pgq.ref(2)]),
    ])
    worker = q.worker(install_signal_handlers=False, run_maintenance=False, queues=["default"], concurrency=4)
    # Each pass runs what is runnable; its completions release the next layer.
    for _ in range(10):
        if len(order) == 4:
            break
        if q.redis is not None:
            _reconcile(q)
        worker.run_once()
    assert order[0] == "root" and sorted(order[1:3]) == ["left", "right"] and order[3] == "join"
    assert statuses(q, ids) == ["completed"] * 4


def _reconcile(q: pgq.Queue) -> None:
    """Redis mode: one reconciler pass mirrors the released children (what the leader does)."""
    from pgq.redis.reconciler import Reconciler

    assert q.redis is not None
    Reconciler(q.settings, q.pool, q.redis).run_once()


def test_requeue_dead_with_dependents_from_python_and_the_cli(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    from click.testing import CliRunner

    from pgq.cli import main

    parent = factories.insert_job(conn, status="running", max_attempts=1)
    worker = factories.job(conn, parent)["worker_id"]
    (child,) = q.enqueue_many([{"task": "t", "depends_on": [parent]}])
    conn.execute("SELECT pgq.fail_job(%s, %s, 1, 'Boom', 'x')", (parent, worker))
    assert statuses(q, [parent, child]) == ["dead", "cancelled"]
    assert q.requeue_dead([parent], with_dependents=True) == [parent]
    assert statuses(q, [parent, child]) == ["queued", "waiting"]
    with pytest.raises(pgq.ValidationError):
        q.requeue_dead([parent], with_dependents="yes")  # type: ignore[arg-type]
    conn.execute("UPDATE pgq.jobs SET status = 'running', worker_id = %s, attempts = 1, started_at = now()"
                 " WHERE id = %s", (worker, parent))
    conn.execute("SELECT pgq.fail_job(%s, %s, 1, 'Boom', 'x')", (parent, worker))
    result = CliRunner().invoke(main, ["--database-url", q.settings.require_database_url(), "dlq", "requeue",
                                       str(parent), "--with-dependents"])
    assert result.exit_code == 0, result.output
    assert statuses(q, [parent, child]) == ["queued", "waiting"]
