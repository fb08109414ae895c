"""A rule-based state machine replayed against Postgres.

Hypothesis drives the stored functions (enqueue, claim, complete, fail, rescue,
cancel, requeue, and stale or foreign reports) on a real database while a
Python model, built on ``pgq.job.TRANSITIONS``, predicts every job's status,
life and attempts. After every step the database and the model must agree, no
job may be lost or duplicated, no job may complete twice, a fenced call that is
rejected must change nothing, and a job's history (job_executions) must list
each attempt exactly once, under its own (life, attempt), with the worker that
claimed it: no attempt recorded twice or for another worker, none of two lives
sharing a number. The database enforces none of that (no unique key on
(job, life, attempt), no link between an execution's worker and the claim); the
model does.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from pgq.db import translated
from pgq.errors import InvalidTransition
from pgq.job import TRANSITIONS, JobSpec, JobStatus, next_status
from pgq.queries import Queries

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUEUE = "sm"
STALE_AFTER_SECONDS = 600.0  # the rescue rule backdates a heartbeat by an hour
ALLOWED_MOVES = {(source, target) for (source, _verb), target in TRANSITIONS.items()}
pick = st.integers(min_value=0, max_value=10_000)


@dataclass
class ModelJob:
    status: JobStatus
    attempts: int
    max_attempts: int
    priority: int
    owner: uuid.UUID | None = None
    executions: int = 0  # finished attempts: one job_executions row each
    completions: int = 0
    life: int = 1  # 1, plus 1 per requeue
    # Every finished attempt, in the order it ended: (life, attempt, worker that claimed it).
    history: list[tuple[int, int, uuid.UUID | None]] = field(default_factory=list)

    def finish_attempt(self) -> None:
        """The running attempt ended (completed, failed, rescued, cancelled): it joins the history."""
        self.executions += 1
        self.history.append((self.life, self.attempts, self.owner))


class QueueMachine(RuleBasedStateMachine):
    conn: ClassVar[psycopg.Connection[Any]]

    def __init__(self) -> None:
        super().__init__()
        self.q = Queries("pgq")
        self.jobs: dict[int, ModelJob] = {}
        self.workers: list[uuid.UUID] = []
        # Every claim ever made: (job id, worker, attempt). Those that are no longer the
        # job's current claim are the source of late reports.
        self.claims: list[tuple[int, uuid.UUID, int]] = []

    # ------------------------------------------------------------ helpers
    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.execute(statement, params)
        return cur.fetchall() if cur.description else []

    def register(self) -> uuid.UUID:
        worker = uuid.uuid4()
        self.q.register_worker(self.conn, worker, "state-machine", 1, [QUEUE], 8, "{}")
        return worker

    def move(self, job: ModelJob, verb: str) -> None:
        # The model can only make moves pgq.job allows; a forbidden one raises here.
        job.status = next_status(job.status, verb)

    def ids_in(self, *statuses: JobStatus) -> list[int]:
        return sorted(i for i, j in self.jobs.items() if j.status in statuses)

    def row_state(self, job_id: int) -> tuple[Any, ...]:
        """Everything a rejected call must leave as it was."""
        return tuple(self.sql(
            "SELECT j.status::text, j.attempts, j.worker_id, j.run_at, j.updated_at, j.finished_at,"
            " j.result, j.last_error,"
            " (SELECT count(*) FROM pgq.job_executions AS e WHERE e.job_id = j.id),"
            " (SELECT count(*) FROM pgq.dead_letter_queue AS d WHERE d.job_id = j.id)"
            " FROM pgq.jobs AS j WHERE j.id = %s", (job_id,))[0])

    def is_current_claim(self, job_id: int, worker: uuid.UUID, attempt: int) -> bool:
        j = self.jobs[job_id]
        return j.status is JobStatus.RUNNING and j.owner == worker and j.attempts == attempt

    # ------------------------------------------------------------ rules
    @initialize(max_attempts=st.lists(st.integers(1, 2), min_size=1, max_size=4))
    def fresh_database(self, max_attempts: list[int]) -> None:
        self.sql("TRUNCATE pgq.jobs, pgq.workers, pgq.job_executions, pgq.dead_letter_queue CASCADE")
        self.workers = [self.register(), self.register()]
        for n in max_attempts:
            self.enqueue(1, n, 3)

    @precondition(lambda self: len(self.ids_in(JobStatus.QUEUED, JobStatus.RETRYING, JobStatus.RUNNING)) < 8)
    @rule(count=st.integers(1, 4), max_attempts=st.integers(1, 2), priority=st.integers(1, 5))
    def enqueue(self, count: int, max_attempts: int, priority: int) -> None:
        specs = [JobSpec.build("sm.task", {"n": n}, queue=QUEUE, priority=priority, max_attempts=max_attempts)
                 for n in range(count)]
        rows = self.q.enqueue_jobs(self.conn, specs)
        assert [created for _, created in rows] == [True] * count
        for job_id, _ in rows:
            assert job_id not in self.jobs
            self.jobs[job_id] = ModelJob(JobStatus.QUEUED, 0, max_attempts, priority)

    @precondition(lambda self: self.ids_in(JobStatus.QUEUED, JobStatus.RETRYING))
    @rule(w=pick, max_jobs=st.integers(1, 5))
    def claim(self, w: int, max_jobs: int) -> None:
        worker = self.workers[w % len(self.workers)]
        runnable = set(self.ids_in(JobStatus.QUEUED, JobStatus.RETRYING))
        claimed = self.q.get_runnable_jobs(self.conn, [QUEUE], worker, max_jobs)
        ids = [job.id for job in claimed]
        assert len(ids) == len(set(ids)) == min(max_jobs, len(runnable))
        assert set(ids) <= runnable
        # Priority first: nothing left behind outranks what was taken.
        if ids and runnable - set(ids):
            assert min(self.jobs[i].priority for i in ids) >= max(self.jobs[i].priority for i in runnable - set(ids))
        for job in claimed:
            model = self.jobs[job.id]
            self.move(model, "claim")
            model.attempts += 1
            model.owner = worker
            assert (job.status, job.attempts, job.worker_id) == (JobStatus.RUNNING, model.attempts, worker)
            self.claims.append((job.id, worker, job.attempts))

    @precondition(lambda self: self.ids_in(JobStatus.RUNNING))
    @rule(i=pick)
    def complete(self, i: int) -> None:
        candidates = self.ids_in(JobStatus.RUNNING)
        job_id = candidates[i % len(candidates)]
        model = self.jobs[job_id]
        done = self.q.complete_jobs(self.conn, model.owner, [job_id], [model.attempts], [json.dumps({"id": job_id})])
        assert done == {job_id}
        self.move(model, "complete")
        model.finish_attempt()
        model.completions += 1

    @precondition(lambda self: self.ids_in(JobStatus.RUNNING))
    @rule(i=pick, fatal=st.booleans())
    def fail(self, i: int, fatal: bool) -> None:
        candidates = self.ids_in(JobStatus.RUNNING)
        job_id = candidates[i % len(candidates)]
        model = self.jobs[job_id]
        ok = self.q.fail_job(self.conn, job_id, model.owner, model.attempts, "TestError", "failed on purpose",
                             None, 0.0, fatal, "failed")
        assert ok is True
        attempts_left = model.attempts < model.max_attempts
        self.move(model, "retry" if attempts_left and not fatal else "fail")
        model.finish_attempt()

    @precondition(lambda self: self.ids_in(JobStatus.RUNNING))
    @rule(w=pick)
    def rescue(self, w: int) -> None:
        worker = self.workers[w % len(self.workers)]
        # The worker stopped sending heartbeats an hour ago.
        self.sql("UPDATE pgq.workers SET last_heartbeat = now() - interval '1 hour' WHERE id = %s", (worker,))
        rescues = self.q.mark_stale_workers(self.conn, STALE_AFTER_SECONDS)
        owned = self.ids_in(JobStatus.RUNNING)
        owned = [i for i in owned if self.jobs[i].owner == worker]
        assert sorted(r.job_id for r in rescues if r.job_id is not None) == owned
        assert {r.worker_id for r in rescues} == {worker}
        for job_id in owned:
            model = self.jobs[job_id]
            self.move(model, "rescue" if model.attempts < model.max_attempts else "rescue_dead")
            model.finish_attempt()
        assert self.sql("SELECT status::text FROM pgq.workers WHERE id = %s", (worker,)) == [("stale",)]
        # The dead process is replaced by a new one (a new worker id).
        self.workers[self.workers.index(worker)] = self.register()

    @precondition(lambda self: self.ids_in(JobStatus.QUEUED, JobStatus.RETRYING, JobStatus.RUNNING))
    @rule(i=pick)
    def operator_cancels(self, i: int) -> None:
        candidates = sorted(self.jobs)
        job_id = candidates[i % len(candidates)]
        model = self.jobs[job_id]
        before = self.row_state(job_id)
        if model.status in (JobStatus.COMPLETED, JobStatus.DEAD):
            with pytest.raises(InvalidTransition), translated():
                self.q.cancel_job(self.conn, job_id)
            assert self.row_state(job_id) == before  # the refusal changed nothing
            return
        result = self.q.cancel_job(self.conn, job_id)
        if model.status is JobStatus.CANCELLED:
            assert result is False
            assert self.row_state(job_id) == before
            return
        assert result is True
        if model.status is JobStatus.RUNNING:
            model.finish_attempt()  # the attempt ends with outcome 'cancelled'
        self.move(model, "cancel")

    @precondition(lambda self: self.ids_in(JobStatus.DEAD))
    @rule(i=pick)
    def operator_requeues(self, i: int) -> None:
        candidates = self.ids_in(JobStatus.DEAD)
        job_id = candidates[i % len(candidates)]
        assert self.q.requeue_dead_jobs(self.conn, [job_id], None) == [job_id]
        model = self.jobs[job_id]
        self.move(model, "requeue")
        model.attempts = 0  # a requeued job gets a full set of attempts again, in a new life
        model.life += 1

    @precondition(lambda self: self.jobs)
    @rule(i=pick)
    def operator_requeue_of_a_job_that_is_not_dead_is_refused(self, i: int) -> None:
        candidates = [j for j, m in sorted(self.jobs.items()) if m.status is not JobStatus.DEAD]
        if not candidates:
            return
        job_id = candidates[i % len(candidates)]
        dead = self.ids_in(JobStatus.DEAD)
        before = {j: self.row_state(j) for j in [job_id, *dead]}
        with pytest.raises(InvalidTransition), translated():
            # One bad id among good ones: nothing at all is requeued.
            self.q.requeue_dead_jobs(self.conn, [*dead, job_id], None)
        assert {j: self.row_state(j) for j in before} == before

    @precondition(lambda self: any(not self.is_current_claim(*c) for c in self.claims))
    @rule(i=pick, as_completion=st.booleans())
    def late_report_from_a_previous_owner_or_attempt(self, i: int, as_completion: bool) -> None:
        stale = [c for c in self.claims if not self.is_current_claim(*c)]
        job_id, worker, attempt = stale[i % len(stale)]
        before = self.row_state(job_id)
        if as_completion:
            assert self.q.complete_jobs(self.conn, worker, [job_id], [attempt], ['"late"']) == set()
        else:
            assert self.q.fail_job(self.conn, job_id, worker, attempt, "Late", "late report", None, 0.0,
                                   False, "failed") is False
        assert self.row_state(job_id) == before

    @precondition(lambda self: self.ids_in(JobStatus.RUNNING))
    @rule(i=pick, as_completion=st.booleans(), stranger=st.booleans())
    def report_from_a_worker_that_does_not_own_the_job(self, i: int, as_completion: bool, stranger: bool) -> None:
        candidates = self.ids_in(JobStatus.RUNNING)
        job_id = candidates[i % len(candidates)]
        model = self.jobs[job_id]
        others = [w for w in self.workers if w != model.owner]
        worker = uuid.uuid4() if stranger or not others else others[0]
        before = self.row_state(job_id)
        if as_completion:
            assert self.q.complete_jobs(self.conn, worker, [job_id], [model.attempts], ["1"]) == set()
        else:
            assert self.q.fail_job(self.conn, job_id, worker, model.attempts, "Foreign", "not mine", None, 0.0,
                                   True, "failed") is False
        assert self.row_state(job_id) == before

    # ------------------------------------------------------------ invariants
    @invariant()
    def database_agrees_with_the_model(self) -> None:
        rows = self.sql("SELECT id, status::text, life, attempts, worker_id FROM pgq.jobs ORDER BY id")
        # No job lost, none appeared from nowhere.
        assert [r[0] for r in rows] == sorted(self.jobs)
        for job_id, status, life, attempts, worker in rows:
            model = self.jobs[job_id]
            assert (status, life, attempts) == (model.status.value, model.life, model.attempts), job_id
            if model.status is JobStatus.RUNNING:
                assert worker == model.owner, job_id

    @invariant()
    def history_agrees_with_the_model(self) -> None:
        rows = self.sql(
            "SELECT j.id,"
            " (SELECT count(*) FROM pgq.job_executions AS e WHERE e.job_id = j.id),"
            " (SELECT count(*) FROM pgq.job_executions AS e WHERE e.job_id = j.id AND e.outcome = 'completed'),"
            " (SELECT count(*) FROM pgq.dead_letter_queue AS d WHERE d.job_id = j.id AND d.requeued_at IS NULL)"
            " FROM pgq.jobs AS j ORDER BY j.id")
        for job_id, executions, completions, open_letters in rows:
            model = self.jobs[job_id]
            assert executions == model.executions, job_id
            # Completion is exactly-once.
            assert completions == model.completions <= 1, job_id
            assert completions == (1 if model.status is JobStatus.COMPLETED else 0), job_id
            assert open_letters == (1 if model.status is JobStatus.DEAD else 0), job_id

    @invariant()
    def each_attempt_is_recorded_once_for_the_worker_that_claimed_it(self) -> None:
        # Replaces a check that restated the CHECK constraint jobs_running_has_owner (it could
        # not fail). This one can: two rows for one attempt, an attempt booked to a worker that
        # never claimed it, or two lives numbering their attempts alike all break it.
        recorded: dict[int, list[tuple[int, int, uuid.UUID | None]]] = {}
        for job_id, life, attempt, worker in self.sql(
                "SELECT job_id, life, attempt, worker_id FROM pgq.job_executions ORDER BY id"):
            recorded.setdefault(job_id, []).append((life, attempt, worker))
        for job_id, model in self.jobs.items():
            history = recorded.get(job_id, [])
            assert history == model.history, job_id
            attempts = [(life, attempt) for life, attempt, _ in history]
            if model.status is JobStatus.RUNNING:
                attempts.append((model.life, model.attempts))
            assert len(attempts) == len(set(attempts)), job_id  # no (life, attempt) twice, the running one too


def test_queue_state_machine_agrees_with_postgres(conn: psycopg.Connection[Any]) -> None:
    QueueMachine.conn = conn
    run_state_machine_as_test(
        QueueMachine,
        settings=settings(max_examples=100, stateful_step_count=30, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow]),
    )


def test_model_moves_are_the_ones_the_database_allows() -> None:
    # The moves the machine makes are exactly the table's, so agreeing with the
    # model means the database never made a move pgq.job forbids.
    used = {("queued", "running"), ("retrying", "running"), ("running", "completed"), ("running", "retrying"),
            ("running", "dead"), ("running", "cancelled"), ("queued", "cancelled"), ("retrying", "cancelled"),
            ("dead", "queued")}
    assert {(s.value, t.value) for s, t in ALLOWED_MOVES} >= used


def test_sql_job_status_enum_has_the_python_values(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute("SELECT unnest(enum_range(NULL::pgq.job_status))::text").fetchall()
    assert [r[0] for r in rows] == [s.value for s in JobStatus]
