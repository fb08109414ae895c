"""Hypothesis interleaves enqueue (pushed, transactional, and backlogs deep enough
for a worker to pop ahead), claim through Redis
(and through Postgres: when Redis sends the worker there, or when it cannot
reach Redis and leaves stale ids behind), complete, cancel,
FLUSH and reconcile against a real Redis and Postgres, with two workers.

Checked at every claim: no job is handed to a worker while another live worker
holds it, and Postgres agrees about who holds what. Checked at the end, after
draining the queue: every job reached exactly one terminal state, the one the
model expects, and every completed job completed exactly once.
"""

from __future__ import annotations

import itertools
import uuid
from typing import ClassVar

import psycopg
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

import pgq
from pgq.clock import SystemClock
from pgq.job import Job
from pgq.redis.claim_source import RedisClaimSource
from pgq.redis.reconciler import Reconciler
from pgq.worker import WorkerCounters
from pgq.worker.claim import PostgresClaimSource
from pgq.worker.positions import Positions
from redis_service import accelerated, delete_prefix, unique_prefix

pytestmark = [pytest.mark.integration, pytest.mark.redis]

_queues = itertools.count(1)
pick = st.integers(min_value=0, max_value=10_000)


class MirrorMachine(RuleBasedStateMachine):
    base: ClassVar[pgq.Settings]
    redis_url: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self.queue_name = f"sm{next(_queues)}"  # examples share the database, not their jobs
        self.prefix = unique_prefix()
        self.settings = accelerated(self.base, self.redis_url, self.prefix, redis_poll_interval_seconds=600.0)
        self.q = pgq.connect(settings=self.settings, strict_tasks=False)
        assert self.q.redis is not None
        self.reconciler = Reconciler(self.settings, self.q.pool, self.q.redis)
        self.worker_ids = [uuid.uuid4(), uuid.uuid4()]
        self.workers = []
        with self.q.pool.connection() as conn:
            for wid in self.worker_ids:
                self.q.queries.register_worker(conn, wid, "test", 1, [self.queue_name], 4, "{}")
                counters = WorkerCounters()
                positions = Positions(lambda _: False, SystemClock())
                fallback = PostgresClaimSource(lambda: self.q.pool, self.q.queries, wid, [self.queue_name], counters,
                                               positions)
                self.workers.append(RedisClaimSource(self.q.redis, wid, [self.queue_name], counters, fallback,
                                                     lambda: self.q.pool))
        self.expected: dict[int, str] = {}  # job id -> status the model expects (live jobs: "live")
        self.held: dict[int, tuple[int, int]] = {}  # job id -> (worker index, attempt)
        self.completions: dict[int, int] = {}
        self.lost: list[tuple[int, int, int]] = []  # (job, worker, attempt) cancelled while held

    # ------------------------------------------------------------ rules
    @rule(count=st.integers(1, 3), priority=st.integers(1, 5))
    def enqueue(self, count: int, priority: int) -> None:
        ids = self.q.enqueue_many([{"task": "t", "queue": self.queue_name, "priority": priority}] * count)
        self.expected.update((i, "live") for i in ids)

    @rule()
    def enqueue_a_backlog(self) -> None:
        """Enough jobs for a busy worker to pop ahead: it then holds ids it has not
        claimed, which the other worker (or the Postgres path) may claim first."""
        ids = self.q.enqueue_many([{"task": "t", "queue": self.queue_name}] * 100)
        self.expected.update((i, "live") for i in ids)

    @rule(count=st.integers(1, 2))
    def enqueue_in_a_transaction(self, count: int) -> None:
        with psycopg.connect(self.settings.require_database_url()) as own:
            ids = self.q.enqueue_many([{"task": "t", "queue": self.queue_name}] * count, connection=own)
            own.commit()
        self.expected.update((i, "live") for i in ids)

    @rule(w=st.integers(0, 1), n=st.integers(1, 4))
    def claim(self, w: int, n: int) -> None:
        self._took(w, self._claim(w, n, thorough=False))

    @rule(w=st.integers(0, 1), n=st.integers(1, 4))
    def claim_while_redis_is_unreachable(self, w: int, n: int) -> None:
        """A worker that cannot reach Redis claims through Postgres; the ids stay
        in Redis (it could not remove them), stale."""
        with self.q.pool.connection() as conn:
            self._took(w, self.q.queries.get_runnable_jobs(conn, [self.queue_name], self.worker_ids[w], n))

    @rule(w=st.integers(0, 1), choice=pick)
    def complete(self, w: int, choice: int) -> None:
        mine = sorted(i for i, (holder, _) in self.held.items() if holder == w)
        if not mine:
            return
        job_id = mine[choice % len(mine)]
        self._complete(job_id)

    @rule(choice=pick)
    def cancel(self, choice: int) -> None:
        live = sorted(i for i, s in self.expected.items() if s == "live")
        if not live:
            return
        job_id = live[choice % len(live)]
        assert self.q.cancel(job_id)
        self.expected[job_id] = "cancelled"
        if job_id in self.held:  # its worker's late completion must be rejected
            self.lost.append((job_id, *self.held.pop(job_id)))

    @rule()
    def late_completion_is_rejected(self) -> None:
        if not self.lost:
            return
        job_id, w, attempt = self.lost.pop()
        with self.q.pool.connection() as conn:
            assert self.q.queries.complete_jobs(conn, self.worker_ids[w], [job_id], [attempt], [None]) == set()
        self.workers[w].finished([job_id])

    @rule()
    def flush(self) -> None:
        delete_prefix(self.redis_url, self.prefix)  # FLUSHALL, for this deployment's keys

    @rule()
    def reconcile(self) -> None:
        self.reconciler.run_once()

    # ------------------------------------------------------------ checks
    @invariant()
    def postgres_agrees_about_who_holds_what(self) -> None:
        if not self.expected:
            return
        with self.q.pool.connection() as conn:
            rows = conn.execute("SELECT id, status::text, worker_id FROM pgq.jobs WHERE id = ANY(%s)",
                                (list(self.expected),)).fetchall()
        for job_id, status, worker_id in rows:
            if job_id in self.held:
                assert (status, worker_id) == ("running", self.worker_ids[self.held[job_id][0]])
            elif self.expected[job_id] == "live":
                assert status in ("queued", "retrying"), (job_id, status)
            else:
                assert status == self.expected[job_id], (job_id, status)

    def teardown(self) -> None:
        try:
            self._drain()
            with self.q.pool.connection() as conn:
                rows = dict(conn.execute("SELECT id, status::text FROM pgq.jobs WHERE id = ANY(%s)",
                                         (list(self.expected),)).fetchall())
                completed = dict(conn.execute(
                    "SELECT job_id, count(*) FROM pgq.job_executions WHERE outcome = 'completed'"
                    " AND job_id = ANY(%s) GROUP BY job_id", (list(self.expected),)).fetchall())
            assert rows == self.expected  # one terminal state each, the expected one
            assert completed == {i: 1 for i, s in self.expected.items() if s == "completed"}
            assert self.completions == completed
        finally:
            self.q.close()
            delete_prefix(self.redis_url, self.prefix)

    # ------------------------------------------------------------ helpers
    def _claim(self, w: int, n: int, *, thorough: bool) -> list[Job]:
        """What a worker's claim does: Redis when it answers, else Postgres."""
        return self.workers[w].claim(n, thorough=thorough)

    def _took(self, w: int, jobs: list[Job]) -> None:
        for job in jobs:
            assert job.id not in self.held, f"job {job.id} handed to worker {w} while {self.held[job.id]} holds it"
            assert self.expected[job.id] == "live", (job.id, self.expected[job.id])
            self.held[job.id] = (w, job.attempts)

    def _complete(self, job_id: int) -> None:
        w, attempt = self.held.pop(job_id)
        with self.q.pool.connection() as conn:
            done = self.q.queries.complete_jobs(conn, self.worker_ids[w], [job_id], [attempt], [None])
        self.workers[w].finished([job_id])
        assert done == {job_id}
        self.expected[job_id] = "completed"
        self.completions[job_id] = self.completions.get(job_id, 0) + 1

    def _complete_all(self) -> None:
        """Complete every held job, a worker's at once (as its acknowledger batches them)."""
        for w in (0, 1):
            mine = sorted(i for i, (holder, _) in self.held.items() if holder == w)
            if not mine:
                continue
            attempts = [self.held.pop(i)[1] for i in mine]
            with self.q.pool.connection() as conn:
                done = self.q.queries.complete_jobs(conn, self.worker_ids[w], mine, attempts, [None] * len(mine))
            self.workers[w].finished(mine)
            assert done == set(mine)
            for job_id in mine:
                self.expected[job_id] = "completed"
                self.completions[job_id] = self.completions.get(job_id, 0) + 1

    def _drain(self) -> None:
        for _ in range(50):
            self._complete_all()
            if not any(s == "live" for s in self.expected.values()):
                return
            self.reconciler.run_once()
            for w in (0, 1):
                self._took(w, self._claim(w, 100, thorough=True))
        raise AssertionError("the queue did not drain")


def test_mirror_interleavings_keep_every_job_to_one_terminal_state(settings: pgq.Settings, redis_url: str) -> None:
    MirrorMachine.base = settings
    MirrorMachine.redis_url = redis_url
    run_state_machine_as_test(
        MirrorMachine,
        settings=hypothesis_settings(max_examples=30, stateful_step_count=30, deadline=None, database=None,
                                     suppress_health_check=[HealthCheck.too_slow]),
    )
