"""Job graphs: a rule-based state machine over random graphs and random outcomes,
replayed against Postgres.

Hypothesis enqueues jobs with random parents among the jobs so far (through
``enqueue_job_v2``), completes, kills (fatal failure: dead), cancels and
requeues them (``requeue_dead_jobs_v2`` with or without dependents). A Python
model written from SPEC §7 predicts every job's status: a job waits while a
parent has not completed, is released when the last one completes, and is
cancelled (for a reason: "propagated") when a parent ends dead or cancelled;
a requeue with dependents brings those back to waiting unless another parent
is still dead or cancelled. After every step the database must agree with the
model: which jobs ran (completed), which are waiting, which ended cancelled
and why.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUEUE = "graph-sm"
pick = st.integers(min_value=0, max_value=10_000)
FINISHED_BAD = ("dead", "cancelled")


@dataclass
class ModelJob:
    status: str
    parents: frozenset[int]
    propagated: bool = False  # cancelled because an ancestor ended dead or cancelled
    children: set[int] = field(default_factory=set)


class GraphMachine(RuleBasedStateMachine):
    conn: ClassVar[psycopg.Connection[Any]]

    @initialize()
    def start(self) -> None:
        self.jobs: dict[int, ModelJob] = {}
        self.worker = uuid.uuid4()
        self.conn.execute("SELECT pgq.register_worker(%s, 'graph-sm', 1, %s, 8, '{}')", (self.worker, [QUEUE]))

    # ------------------------------------------------------------ helpers
    def _with(self, *statuses: str) -> list[int]:
        return sorted(i for i, j in self.jobs.items() if j.status in statuses)

    def _cascade(self, job_id: int) -> None:
        """Model: the waiting descendants of a job that ended dead or cancelled are cancelled."""
        for child in sorted(self.jobs[job_id].children):
            c = self.jobs[child]
            if c.status == "waiting":
                c.status, c.propagated = "cancelled", True
                self._cascade(child)

    def _run(self, job_id: int) -> None:
        self.conn.execute("UPDATE pgq.jobs SET status = 'running', worker_id = %s, attempts = attempts + 1,"
                          " started_at = now() WHERE id = %s", (self.worker, job_id))

    # ------------------------------------------------------------ rules
    @rule(data=st.data(), count=st.integers(min_value=0, max_value=3))
    def enqueue(self, data: st.DataObject, count: int) -> None:
        known = sorted(self.jobs)
        parents = frozenset(data.draw(st.lists(st.sampled_from(known), max_size=count, unique=True))) if known else frozenset()
        row = self.conn.execute("SELECT pgq.enqueue_job_v2('t', p_queue => %s, p_depends_on => %s::bigint[])",
                                (QUEUE, sorted(parents))).fetchone()
        assert row is not None
        statuses = [self.jobs[p].status for p in parents]
        if any(s in FINISHED_BAD for s in statuses):
            model = ModelJob("cancelled", parents, propagated=True)
        elif all(s == "completed" for s in statuses):
            model = ModelJob("queued", parents)
        else:
            model = ModelJob("waiting", parents)
        self.jobs[row[0]] = model
        for p in parents:
            self.jobs[p].children.add(row[0])

    @precondition(lambda self: bool(self._with("queued")))
    @rule(which=pick)
    def complete(self, which: int) -> None:
        queued = self._with("queued")
        job_id = queued[which % len(queued)]
        self._run(job_id)
        done = self.conn.execute("SELECT * FROM pgq.complete_jobs(%s, %s::bigint[], '{1}')",
                                 (self.worker, [job_id])).fetchall()
        assert done == [(job_id,)]
        self.jobs[job_id].status = "completed"
        for child in self.jobs[job_id].children:
            c = self.jobs[child]
            if c.status == "waiting" and all(self.jobs[p].status == "completed" for p in c.parents):
                c.status = "queued"

    @precondition(lambda self: bool(self._with("queued")))
    @rule(which=pick)
    def die(self, which: int) -> None:
        queued = self._with("queued")
        job_id = queued[which % len(queued)]
        self._run(job_id)
        attempt = self.conn.execute("SELECT attempts FROM pgq.jobs WHERE id = %s", (job_id,)).fetchone()
        assert attempt is not None
        row = self.conn.execute("SELECT pgq.fail_job(%s, %s, %s, 'Boom', 'fatal', NULL, NULL, true)",
                                (job_id, self.worker, attempt[0])).fetchone()
        assert row == (True,)
        self.jobs[job_id].status = "dead"
        self._cascade(job_id)

    @precondition(lambda self: bool(self._with("queued", "waiting")))
    @rule(which=pick)
    def cancel(self, which: int) -> None:
        live = self._with("queued", "waiting")
        job_id = live[which % len(live)]
        assert self.conn.execute("SELECT pgq.cancel_job(%s)", (job_id,)).fetchone() == (True,)
        self.jobs[job_id].status, self.jobs[job_id].propagated = "cancelled", False
        self._cascade(job_id)

    @precondition(lambda self: bool(self._with("dead")))
    @rule(which=pick, with_dependents=st.booleans())
    def requeue(self, which: int, with_dependents: bool) -> None:
        dead = self._with("dead")
        job_id = dead[which % len(dead)]
        rows = self.conn.execute("SELECT * FROM pgq.requeue_dead_jobs_v2(%s, p_with_dependents => %s)",
                                 ([job_id], with_dependents)).fetchall()
        assert rows == [(job_id,)]
        self.jobs[job_id].status = "queued"
        if not with_dependents:
            return
        restored: set[int] = set()
        frontier = [job_id]
        while frontier:
            for child in self.jobs[frontier.pop()].children:
                c = self.jobs[child]
                if c.status == "cancelled" and c.propagated and child not in restored:
                    restored.add(child)
                    frontier.append(child)
        for child in restored:
            self.jobs[child].status, self.jobs[child].propagated = "waiting", False
        again = sorted(c for c in restored
                       if any(self.jobs[p].status in FINISHED_BAD for p in self.jobs[c].parents))
        for child in again:
            if self.jobs[child].status == "waiting":
                self.jobs[child].status, self.jobs[child].propagated = "cancelled", True
            self._cascade(child)

    # ------------------------------------------------------------ the model holds
    @invariant()
    def database_agrees(self) -> None:
        if not getattr(self, "jobs", None):
            return
        rows = self.conn.execute("SELECT id, status::text, coalesce(last_error LIKE 'cancelled: %%', false)"
                                 " FROM pgq.jobs WHERE id = ANY (%s)", (sorted(self.jobs),)).fetchall()
        actual = {r[0]: (r[1], r[2]) for r in rows}
        expected = {i: (j.status, j.propagated and j.status == "cancelled") for i, j in self.jobs.items()}
        assert actual == expected


def test_graph_state_machine_agrees_with_postgres(conn: psycopg.Connection[Any]) -> None:
    GraphMachine.conn = conn
    run_state_machine_as_test(
        GraphMachine,
        settings=settings(max_examples=60, stateful_step_count=30, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow]),
    )
