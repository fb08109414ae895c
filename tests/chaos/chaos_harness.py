"""The machinery of a chaos scenario: worker processes, a producer, faults and the audit.

A ``ChaosRun`` starts real ``pgq worker chaos_app:queue`` processes against
one database of the test-owned cluster, feeds them a planned mix of jobs from
a producer thread (which keeps a bounded backlog, so faults land while work
flows), lets the scenario inject faults (each recorded with the database
clock), replaces workers that died, and at the end drains the queue, stops
the workers with SIGTERM and audits the database (``chaos_audit``).

Nothing waits for a fixed time: every wait polls a condition with a deadline.
Time is driven by settings: heartbeats every 0.25 s, a worker is stale after
1 s, maintenance every 0.25 s (``BASE_ENV``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

import pgq
from chaos_audit import (AuditReport, audit, describe_leftovers, mirror_leftovers,
                         no_live_worker_rows_for_dead_processes, recovery_seconds, redis_resumed_seconds)
from chaos_cluster import Cluster
from pgq.errors import PgqError
from pgq.health.evacuation import EXIT_EVACUATED
from pgq.redis.keys import ABANDONED_MS, Keys
from redis_service import OwnedRedis, unique_prefix

HERE = Path(__file__).resolve().parent
TASK, QUEUE = "chaos.work", "chaos"
# The workers LISTEN as a role of their own (PGQ_LISTEN_DATABASE_URL), so that a test can
# refuse new LISTEN sessions (ALTER ROLE ... NOLOGIN) and nothing else. A scenario may also
# run its workers as a role that is not a superuser (``ChaosRun(role=WORKER_ROLE)``), so that
# a connection limit applies to them (superusers are exempt from connection limits).
LISTEN_ROLE = "chaos_listener"
WORKER_ROLE = "chaos_worker"
# Retries come quickly, so that flaky and failing jobs finish within the scenario.
BACKOFF = pgq.Backoff(base=0.05, factor=2.0, max=0.4, jitter=0.1)
MAX_ATTEMPTS = {"ok": 10, "flaky": 10, "fail": 3}

# Short heartbeats: a killed or stalled worker is found out in about a second.
BASE_ENV = {
    "PGQ_SCHEMA": "pgq",
    "PGQ_HEARTBEAT_INTERVAL_SECONDS": "0.25",
    "PGQ_STALE_AFTER_SECONDS": "1.0",
    "PGQ_MAINTENANCE_INTERVAL_SECONDS": "0.25",
    "PGQ_POLL_INTERVAL_SECONDS": "0.2",
    "PGQ_SHUTDOWN_GRACE_SECONDS": "15",
    "PGQ_JOB_RETENTION_SECONDS": "86400",
    # Self-evacuation off, but in the evacuation scenarios (test_chaos_evacuation.py, which
    # include a poison-heavy fleet that must stay): the other scenarios count on a fixed
    # fleet, and by design a worker without busy peers whose failed jobs ran nowhere else
    # (a partitioned fleet's lone survivor) may still evacuate once (docs/health.md §7).
    "PGQ_EVACUATION": "false",
}

CLUSTER_SETUP = f"CREATE ROLE {LISTEN_ROLE} LOGIN; CREATE ROLE {WORKER_ROLE} LOGIN"

RUNS_TABLE = f"""
CREATE SCHEMA chaos;
CREATE TABLE chaos.runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id bigint NOT NULL,
    n integer NOT NULL,
    attempt integer NOT NULL,
    worker_id uuid,
    pid integer NOT NULL,
    -- the claim it ran: jobs.started_at when it was claimed (= its job_executions.started_at),
    -- which tells apart two claims of one attempt by one worker (a claim given back, taken again)
    claimed_at timestamptz NOT NULL,
    via text,  -- how the job was claimed: postgres (get_runnable_jobs) or redis (popped ids)
    started_at timestamptz NOT NULL,
    ended_at timestamptz,
    outcome text
);
CREATE INDEX runs_job_attempt ON chaos.runs (job_id, attempt);
COMMENT ON TABLE chaos.runs IS 'One row per handler execution in the chaos suite (database clock).';
CREATE TABLE chaos.starts (job_id bigint NOT NULL, attempt integer NOT NULL, worker_id uuid NOT NULL,
                           claimed_at timestamptz NOT NULL);
COMMENT ON TABLE chaos.starts IS 'Handler starts from the workers'' start journals, loaded before the audit.';
GRANT USAGE ON SCHEMA pgq, chaos TO {WORKER_ROLE};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pgq, chaos TO {WORKER_ROLE};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA pgq, chaos TO {WORKER_ROLE};
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA pgq TO {WORKER_ROLE};
"""


@dataclass(frozen=True)
class Mode:
    """How the workers run: ``postgres`` (Postgres only) or ``redis`` (the Redis
    accelerator: ``worker_env`` adds its variables, and the run gets a redis-server
    of the suite's own). ``short_share``: the share of a scenario's planned jobs that
    the CI (short) version runs in this mode, so that both modes fit the CI budget."""

    name: str
    worker_env: Callable[[ChaosRun], dict[str, str]] = lambda run: {}
    uses_redis: bool = False
    short_share: float = 1.0


def redis_worker_env(run: ChaosRun) -> dict[str, str]:
    """The Redis mode's worker variables: the run's redis-server and key prefix, a
    reconciler pass every 0.25 s, a Redis heartbeat key outliving two stale limits, and
    the Redis safety-net poll of Postgres as long as the run's Postgres poll."""
    assert run.redis is not None, "Redis mode needs a redis-server"
    return {
        "PGQ_REDIS_URL": run.redis.url,
        "PGQ_REDIS_PREFIX": run.redis_prefix,
        "PGQ_REDIS_RECONCILE_INTERVAL_SECONDS": "0.25",
        "PGQ_REDIS_HEARTBEAT_TTL_SECONDS": "2.0",
        "PGQ_REDIS_POLL_INTERVAL_SECONDS": run.env["PGQ_POLL_INTERVAL_SECONDS"],
    }


MODES: dict[str, Mode] = {
    "postgres": Mode("postgres"),
    # The CI version runs fewer jobs in Redis mode, so that both modes fit in about 3 minutes.
    "redis": Mode("redis", redis_worker_env, uses_redis=True, short_share=0.5),
}


@dataclass(frozen=True)
class Scale:
    """Sizes of a scenario: the CI version, or ``--chaos-long``."""

    long: bool

    def pick(self, short: Any, long: Any) -> Any:
        return long if self.long else short


@dataclass
class Fault:
    kind: str
    at: dt.datetime  # database clock when the fault was injected
    lifted: dt.datetime  # database clock when it ended (== at for instantaneous ones)
    worker_ids: list[uuid.UUID] = field(default_factory=list)
    recovered_in: float | None = None
    # A Redis fault is over once work flows *and* jobs are claimed through Redis again.
    back_on_redis: bool = False


@dataclass
class WorkerProc:
    index: int
    proc: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]
    worker_id: uuid.UUID | None = None
    expected_exit: bool = False  # killed or stopped on purpose

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def appname(self) -> str:
        """The application_name of this worker's pgq connections (its handlers' add ``-rec``)."""
        return self.env["PGAPPNAME"]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def state(self) -> str:
        """The process state letter from /proc (R, S, T = stopped, Z, ...)."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return "gone"
        return stat.rsplit(")", 1)[1].split()[0]


def plan_jobs(total: int, seed: int, *, slow_ms: tuple[int, int] = (200, 600),
              job_ms: tuple[int, int] | None = None, fail_share: float = 0.04) -> list[dict[str, Any]]:
    """The jobs of a scenario: mostly quick ones, some flaky, some failing for good (``fail_share``
    of them), a few slow (``job_ms``: every job works this long instead, from the range)."""
    rng = random.Random(seed)
    jobs = []
    for n in range(total):
        roll = rng.random()
        kind = "fail" if roll < fail_share else "flaky" if roll < fail_share + 0.08 \
            else "slow" if roll < fail_share + 0.10 else "ok"
        ms = rng.randint(*slow_ms) if kind == "slow" else rng.randint(0, 15)
        if job_ms is not None:
            ms = rng.randint(*job_ms)
        jobs.append({"n": n, "kind": "ok" if kind == "slow" else kind, "ms": ms})
    return jobs


class Database:
    """A reconnecting autocommit connection for the harness's own reads (survives restarts)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[Any] | None = None

    def conn(self, timeout: float = 60.0) -> psycopg.Connection[Any]:
        deadline = time.monotonic() + timeout
        while self._conn is None or self._conn.closed or self._conn.broken:
            try:
                self._conn = psycopg.connect(self.url, autocommit=True, application_name="chaos-harness",
                                             connect_timeout=5)
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                threading.Event().wait(0.05)  # the server is restarting; poll again
        return self._conn

    def query(self, statement: str, params: tuple[Any, ...] = (), timeout: float = 60.0) -> list[tuple[Any, ...]]:
        """Run a statement (one that is safe to repeat), retrying across a server restart."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.conn(timeout).execute(statement, params).fetchall()
            except psycopg.OperationalError:
                if self._conn is not None:
                    self._conn.close()
                if time.monotonic() > deadline:
                    raise

    def execute(self, statement: str) -> None:
        """Run a statement that returns no rows (DDL)."""
        self.conn().execute(statement)

    def one(self, statement: str, params: tuple[Any, ...] = ()) -> Any:
        return self.query(statement, params)[0][0]

    def now(self) -> dt.datetime:
        value: dt.datetime = self.one("SELECT clock_timestamp()")
        return value

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class Producer(threading.Thread):
    """Enqueues the planned jobs in chunks, keeping the backlog under ``backlog`` runnable jobs.

    Each job has the unique key ``chaos:<n>``. When a call fails (the server went
    away), whether its single statement committed is unknown: the producer looks
    the chunk's keys up once the server answers and sends only a chunk that is not
    there, so a job is neither lost nor enqueued twice.
    """

    def __init__(self, url: str, plan: list[dict[str, Any]], *, chunk: int, backlog: int,
                 rate: float | None = None, redis: dict[str, Any] | None = None) -> None:
        super().__init__(name="chaos-producer", daemon=True)
        self.url, self.plan, self.chunk, self.backlog, self.rate = url, plan, chunk, backlog, rate
        self.redis = redis or {}  # Redis mode: redis_url and redis_prefix (pushes after each commit)
        self.sent = 0
        self.errors = 0
        self.failure: BaseException | None = None
        self._halt = threading.Event()
        self._paused = threading.Event()
        self.holding = threading.Event()  # set while paused between chunks

    def stop(self) -> None:
        self._halt.set()

    def pause(self, paused: bool) -> None:
        """Hold back the remaining jobs (``True``: ``holding`` is set once no call is in
        flight any more) or let them go (``False``)."""
        if paused:
            self._paused.set()
        else:
            self._paused.clear()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by ChaosRun.finish
            self.failure = exc

    def _run(self) -> None:
        settings = pgq.Settings(database_url=self.url, schema="pgq", pool_size=2, **self.redis)
        db = Database(self.url)
        q = pgq.Queue(settings, strict_tasks=False)
        try:
            began = time.monotonic()
            for start in range(0, len(self.plan), self.chunk):
                items = self.plan[start:start + self.chunk]
                if self.rate:
                    # An offered rate: chunk k is due at k * chunk / rate seconds (pacing, not waiting).
                    self._halt.wait(max(0.0, began + start / self.rate - time.monotonic()))
                while not self._halt.is_set() and (self._paused.is_set() or self._backlog(db) >= self.backlog):
                    if self._paused.is_set():
                        self.holding.set()
                    self._halt.wait(0.01)  # polling the backlog
                self.holding.clear()
                if self._halt.is_set():
                    return
                self._send(q, db, items)
                self.sent += len(items)
        finally:
            q.close()
            db.close()

    def _backlog(self, db: Database) -> int:
        return int(db.one("SELECT count(*) FROM pgq.jobs WHERE status IN ('queued', 'retrying', 'running')"))

    def _send(self, q: pgq.Queue, db: Database, items: list[dict[str, Any]]) -> None:
        specs = [q.job_spec(TASK, item, queue=QUEUE, max_attempts=MAX_ATTEMPTS[item["kind"]],
                            unique_key=f"chaos:{item['n']}", retry=BACKOFF) for item in items]
        keys = [s.unique_key for s in specs]
        while True:
            try:
                q.enqueue_many(specs)
                return
            except PgqError:
                self.errors += 1
                self._halt.wait(0.05)
                # One statement: the chunk is there entirely or not at all.
                if db.one("SELECT count(*) FROM pgq.jobs WHERE unique_key = ANY(%s)", (keys,)):
                    return


class ChaosRun:
    """One scenario's run: see the module docstring."""

    def __init__(self, cluster: Cluster, url: str, mode: Mode, tmp: Path, *, name: str, scale: Scale,
                 jobs: int, workers: int, concurrency: int, seed: int, env: dict[str, str] | None = None,
                 chunk: int = 50, backlog: int | None = None, rate: float | None = None,
                 role: str | None = None, redis: OwnedRedis | None = None,
                 job_ms: tuple[int, int] | None = None, fail_share: float = 0.04) -> None:
        self.cluster, self.url, self.mode, self.tmp = cluster, url, mode, tmp
        self.name, self.scale, self.concurrency = name, scale, concurrency
        self.rng = random.Random(seed)
        if not scale.long:
            jobs = round(jobs * mode.short_share)
        self.plan = plan_jobs(jobs, seed, job_ms=job_ms, fail_share=fail_share)
        # Redis mode: the redis-server the workers use, and this run's own key prefix.
        self.redis = redis if mode.uses_redis else None
        self.redis_prefix = unique_prefix()
        self.env = {**BASE_ENV, **(env or {})}
        if role is not None:  # the workers connect as this role instead of the superuser
            self.env["PGQ_DATABASE_URL"] = self.role_url(role)
        self.db = Database(url)
        self.workers: list[WorkerProc] = []
        self.faults: list[Fault] = []
        self.respawn = True
        self.started = time.monotonic()
        self.producer = Producer(url, self.plan, chunk=chunk, backlog=backlog or 4 * workers * concurrency, rate=rate,
                                 redis={"redis_url": self.redis.url, "redis_prefix": self.redis_prefix}
                                 if self.redis is not None else None)
        self.extras = 0  # jobs enqueued by the scenario itself, numbered after the plan's
        self._mirror_figures: tuple[int | None, float | None] = (None, None)
        self._count = 0
        for _ in range(workers):
            self.start_worker()

    # ------------------------------------------------------------ workers
    def start_worker(self, extra_env: dict[str, str] | None = None, *, wait: bool = True,
                     prefix: list[str] | None = None) -> WorkerProc:
        """Start one worker process (``prefix``: a command it runs under, e.g. ``ip netns exec NS``)."""
        index = self._count
        self._count += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PGQ_", "CHAOS_", "PG"))}
        env.update(self.env)
        env.update(self.mode.worker_env(self))
        env.update(extra_env or {})
        env.setdefault("PGQ_DATABASE_URL", self.url)
        env.setdefault("PGQ_LISTEN_DATABASE_URL", self.role_url(LISTEN_ROLE))
        env["PGAPPNAME"] = f"chaos-w{index}"
        env["CHAOS_START_LOG"] = str(self.start_log(index))
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])
        log = self.tmp / f"worker-{index}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([*(prefix or []), sys.executable, "-m", "pgq.cli", "-v", "worker", "chaos_app:queue",
                                     "-c", str(self.concurrency)], stdout=out, stderr=subprocess.STDOUT,
                                    env=env, cwd=self.tmp)
        worker = WorkerProc(index, proc, log, env)
        self.workers.append(worker)
        if wait:
            self.wait_registered(worker)
        return worker

    def start_log(self, index: int) -> Path:
        """Worker ``index``'s start journal (see ``chaos_app``)."""
        return self.tmp / f"worker-{index}.starts"

    def load_start_journals(self) -> int:
        """Copy the workers' start journals into ``chaos.starts`` (for the audit); return the lines."""
        rows = []
        for worker in self.workers:
            path = self.start_log(worker.index)
            if path.exists():
                # A process killed in the middle of a write leaves at most a partial last line.
                rows += [line.split() for line in path.read_text().splitlines() if len(line.split()) == 4]
        with self.db.conn().cursor() as cur, cur.copy("COPY chaos.starts (job_id, attempt, worker_id, claimed_at) FROM STDIN") as copy:
            for job_id, attempt, worker_id, claimed_at in rows:
                copy.write_row((int(job_id), int(attempt), worker_id, claimed_at))
        return len(rows)

    def role_url(self, role: str) -> str:
        """The run's database, as ``role`` instead of the superuser."""
        return self.url.replace("//postgres@", f"//{role}@", 1)

    def wait_registered(self, worker: WorkerProc, timeout: float = 60.0) -> uuid.UUID:
        def registered() -> uuid.UUID | None:
            if not worker.alive():
                raise AssertionError(f"worker {worker.index} exited ({worker.proc.returncode}) before registering:\n"
                                     f"{self.log_tail(worker)}")
            rows = self.db.query("SELECT id FROM pgq.workers WHERE pid = %s AND status = 'active'", (worker.pid,))
            return rows[0][0] if rows else None

        worker.worker_id = self.poll(registered, f"worker {worker.index} to register", timeout, supervise=False)
        return worker.worker_id

    def live(self) -> list[WorkerProc]:
        return [w for w in self.workers if w.alive() and not w.expected_exit]

    def worker_ids_of(self, worker: WorkerProc) -> list[uuid.UUID]:
        return [r[0] for r in self.db.query("SELECT id FROM pgq.workers WHERE pid = %s", (worker.pid,))]

    def kill(self, worker: WorkerProc, *, replace: bool = True) -> Fault:
        """SIGKILL ``worker`` (no shutdown, no deregistration) and start a replacement."""
        worker.expected_exit = True
        ids = self.worker_ids_of(worker)
        os.kill(worker.pid, signal.SIGKILL)
        worker.proc.wait(30)
        at = self.db.now()
        fault = self.add_fault("kill -9", at, at, ids)
        if replace:
            self.start_worker(wait=False)
        return fault

    def supervise(self) -> None:
        """Replace workers that died on their own (the fault hooks kill themselves) or were
        evacuated (exit code 75: their replacement is a healthy worker, without the extra
        environment of the one it replaces); fail on a worker that exited with an error."""
        for worker in list(self.workers):
            if worker.expected_exit or worker.alive():
                continue
            worker.expected_exit = True
            code = worker.proc.returncode
            if code not in (-signal.SIGKILL, EXIT_EVACUATED):
                raise AssertionError(f"worker {worker.index} (pid {worker.pid}) exited with {code}:\n"
                                     f"{self.log_tail(worker)}")
            at = self.db.now()
            kind = "evacuated" if code == EXIT_EVACUATED else "kill -9 (in worker)"
            self.add_fault(kind, at, at, self.worker_ids_of(worker))
            if self.respawn:
                self.start_worker(wait=False)

    def add_fault(self, kind: str, at: dt.datetime, lifted: dt.datetime, worker_ids: list[uuid.UUID]) -> Fault:
        fault = Fault(kind, at, lifted, worker_ids)
        self.faults.append(fault)
        return fault

    def self_kills(self) -> dict[str, int]:
        """How many workers killed themselves, by where (from the fault hooks' log lines)."""
        counts: dict[str, int] = {}
        for worker in self.workers:
            try:
                text = worker.log.read_text(errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("chaos: SIGKILL "):
                    where = line.removeprefix("chaos: SIGKILL ")
                    counts[where] = counts.get(where, 0) + 1
        return counts

    def diagnostics(self) -> str:
        """What to look at when a scenario failed: the state, each worker's log tail, the server log."""
        parts = [f"== {self.name}: {self.state()}"]
        for worker in self.workers:
            parts.append(f"== worker {worker.index} (pid {worker.pid}, exit {worker.proc.returncode}):\n"
                         f"{self.log_tail(worker, 15)}")
        parts.append(f"== server log:\n{self.cluster.log_tail(20)}")
        return "\n".join(parts)

    def log_tail(self, worker: WorkerProc, lines: int = 30) -> str:
        try:
            return "\n".join(worker.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # ------------------------------------------------------------ progress
    def poll(self, predicate: Callable[[], Any], what: str, timeout: float = 60.0, *, supervise: bool = True) -> Any:
        """Poll ``predicate`` until truthy (replacing dead workers meanwhile), or fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        while True:
            if supervise:
                self.supervise()
            if self.producer.failure is not None:
                raise AssertionError(f"the producer failed: {self.producer.failure!r}")
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: timed out after {timeout} s waiting for {what}; {self.state()}")
            pause.wait(0.02)

    @property
    def total(self) -> int:
        """Logical jobs of this run: the plan's and the scenario's own."""
        return len(self.plan) + self.extras

    def enqueue_extra(self, count: int, label: str, ms: int = 0) -> int:
        """Enqueue ``count`` jobs of ``ms`` milliseconds straight from SQL (as any producer could);
        return ``count``."""
        first = self.total
        self.db.query(
            "SELECT count(*) FROM pgq.enqueue_jobs("
            " p_tasks => array_fill(%s::text, ARRAY[%s::int]),"
            " p_payloads => ARRAY(SELECT jsonb_build_object('n', n, 'kind', 'ok', 'ms', %s::int, 'label', %s::text)"
            "                     FROM generate_series(%s::int, %s::int) AS n ORDER BY n),"
            " p_queues => array_fill(%s::text, ARRAY[%s::int]),"
            " p_unique_keys => ARRAY(SELECT 'chaos:' || n FROM generate_series(%s::int, %s::int) AS n ORDER BY n),"
            " p_max_attempts => array_fill(%s::int, ARRAY[%s::int]),"
            " p_retry_base => array_fill(%s::float8, ARRAY[%s::int]),"
            " p_retry_max => array_fill(%s::float8, ARRAY[%s::int]))",
            (TASK, count, ms, label, first, first + count - 1, QUEUE, count, first, first + count - 1,
             MAX_ATTEMPTS["ok"], count, BACKOFF.base, count, BACKOFF.max, count))
        self.extras += count
        return count

    def labelled_done(self, label: str) -> bool:
        """True when every job enqueued by ``enqueue_extra(..., label)`` is completed."""
        return bool(self.db.one("SELECT count(*) > 0 AND bool_and(status = 'completed') FROM pgq.jobs"
                                " WHERE payload->>'label' = %s", (label,)))

    def state(self) -> str:
        """Jobs by status and workers by status, for failure messages."""
        try:
            jobs = self.db.query("SELECT status::text, count(*) FROM pgq.jobs GROUP BY 1 ORDER BY 1", timeout=5)
            workers = self.db.query("SELECT pid, status::text, last_heartbeat FROM pgq.workers ORDER BY started_at",
                                    timeout=5)
        except psycopg.Error as exc:
            return f"database state unavailable: {exc}"
        procs = [(w.index, w.pid, w.state()) for w in self.workers]
        return f"jobs {jobs}; workers {workers}; processes {procs}"

    def finished(self) -> int:
        """Jobs in a terminal status."""
        return int(self.db.one("SELECT count(*) FROM pgq.jobs WHERE status IN ('completed', 'dead')"))

    def wait_finished(self, count: int, timeout: float = 120.0) -> int:
        """Wait until at least ``count`` jobs are finished (capped at the run's size)."""
        count = min(count, self.total)
        self.poll(lambda: self.finished() >= count, f"{count} finished jobs", timeout)
        return self.finished()

    def at_random_progress(self, low: int, high: int) -> int:
        """Wait until ``low..high`` (random) more jobs finished: a random moment tied to progress."""
        return self.wait_finished(self.finished() + self.rng.randint(low, high))

    def remaining(self) -> int:
        return self.total - self.finished()

    def listening(self) -> set[str]:
        """application_name of the worker sessions sitting in LISTEN now."""
        return {r[0] for r in self.db.query(
            "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE 'chaos-w%%'"
            " AND query ILIKE 'LISTEN%%' AND state = 'idle'")}

    def listen_backends(self) -> dict[str, int]:
        """application_name -> backend pid of each worker's LISTEN session."""
        return {r[0]: r[1] for r in self.db.query(
            "SELECT application_name, pid FROM pg_stat_activity WHERE application_name LIKE 'chaos-w%%'"
            " AND query ILIKE 'LISTEN%%'")}

    def running_workers(self) -> list[WorkerProc]:
        """Live workers holding running jobs now."""
        pids = {r[0] for r in self.db.query(
            "SELECT DISTINCT w.pid FROM pgq.jobs j JOIN pgq.workers w ON w.id = j.worker_id"
            " WHERE j.status = 'running' AND w.status = 'active'")}
        return [w for w in self.live() if w.pid in pids]

    # ------------------------------------------------------------ the run
    def start(self) -> None:
        self.producer.start()

    def finish(self, timeout: float = 180.0) -> AuditReport:
        """Drain, stop the workers gracefully, rescue what the dead left behind, audit."""
        self.poll(lambda: not self.producer.is_alive(), "the producer to enqueue every job", timeout)
        self.poll(lambda: self.finished() >= self.total, f"all {self.total} jobs to finish", timeout)
        mirror_problems: list[str] = []
        if self.redis is not None:
            mirror_problems = self._await_clean_mirror()
        self.respawn = False
        # A worker respawned a moment ago may still be starting (its interpreter not yet
        # at pgq's signal handling): stop it once it registered (or died), as a supervisor would.
        for worker in self.workers:
            if worker.alive() and worker.worker_id is None and worker.state() != "T":
                self.poll(lambda w=worker: not w.alive() or self.db.query(
                    "SELECT 1 FROM pgq.workers WHERE pid = %s", (w.pid,)), f"worker {worker.index} to register",
                    60.0, supervise=False)
        for worker in self.workers:
            if worker.alive():
                if worker.state() == "T":
                    os.kill(worker.pid, signal.SIGCONT)
                worker.expected_exit = True
                os.kill(worker.pid, signal.SIGTERM)
        for worker in self.workers:
            try:
                code = worker.proc.wait(60)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                raise AssertionError(f"worker {worker.index} did not stop on SIGTERM:\n{self.log_tail(worker)}") from None
            if code not in (0, -signal.SIGKILL, EXIT_EVACUATED):
                raise AssertionError(f"worker {worker.index} exited with {code}:\n{self.log_tail(worker)}")
        self._sweep_dead_workers()
        for fault in self.faults:
            fault.recovered_in = recovery_seconds(self.db.conn(), fault.at, fault.lifted, fault.worker_ids)
            if fault.back_on_redis and fault.recovered_in is not None:
                redis_again = redis_resumed_seconds(self.db.conn(), fault.lifted)
                fault.recovered_in = None if redis_again is None else max(fault.recovered_in, redis_again)
        self.load_start_journals()
        report = audit(self.db.conn(), self.total)
        dead_pids = [w.pid for w in self.workers]
        for problem in no_live_worker_rows_for_dead_processes(self.db.conn(), dead_pids):
            report.violations.append(problem)
        if self.redis is not None:
            report.mirror_stale_at_drain, report.mirror_clean_after_s = self._mirror_figures
            report.violations += mirror_problems
            # The workers' shutdown (giving back what they held) must not put finished jobs back.
            with self.redis.client() as client:
                report.violations += [f"after the workers stopped: {p}" for p in describe_leftovers(
                    mirror_leftovers(self.db.conn(), client, self.redis_base))]
            report.check(report.via_redis > 0, "Redis mode, but no job was claimed from ids popped from Redis")
        return report

    @property
    def redis_base(self) -> Keys:
        """The run's Redis key names."""
        return Keys(self.redis_prefix, self.env["PGQ_SCHEMA"])

    def _await_clean_mirror(self, timeout: float = ABANDONED_MS / 1000 + 15.0) -> list[str]:
        """Redis mode, queue drained, workers still running: wait until the workers' own
        mirror reconciler has removed every id of a finished job (ready sets and popped
        batches; the batches of killed workers once their Redis heartbeat key expired and
        Postgres says they are gone; a batch popped by a command that timed out and that Redis ran
        later, after a hang, once it is ``ABANDONED_MS`` old). Returns the violations if it does
        not happen in time."""
        assert self.redis is not None
        began = time.monotonic()
        with self.redis.client() as client:
            first = mirror_leftovers(self.db.conn(), client, self.redis_base)
            leftovers = first
            while leftovers and time.monotonic() - began < timeout:
                threading.Event().wait(0.05)
                self.supervise()
                leftovers = mirror_leftovers(self.db.conn(), client, self.redis_base)
        self._mirror_figures = (sum(len(rows) for rows in first.values()),
                                None if leftovers else round(time.monotonic() - began, 2))
        return [f"{timeout:.0f} s after the queue drained, the mirror reconciler had not cleaned up: {p}"
                for p in describe_leftovers(leftovers)]

    def _sweep_dead_workers(self) -> None:
        """Run maintenance until the killed workers are marked stale (their heartbeats age out)."""
        settings = pgq.Settings(database_url=self.url, schema="pgq",
                                heartbeat_interval_seconds=float(self.env["PGQ_HEARTBEAT_INTERVAL_SECONDS"]),
                                stale_after_seconds=float(self.env["PGQ_STALE_AFTER_SECONDS"]))
        with pgq.Queue(settings, strict_tasks=False) as q:
            maintenance = pgq.Maintenance(settings, q.pool)

            def swept() -> bool:
                maintenance.run_once()
                return not self.db.query("SELECT 1 FROM pgq.workers WHERE status IN ('active', 'draining')")

            self.poll(swept, "every exited worker to be stopped or marked stale", 30.0, supervise=False)

    def close(self) -> None:
        self.producer.stop()
        for worker in self.workers:
            if worker.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGCONT)
                    os.kill(worker.pid, signal.SIGKILL)
                worker.proc.wait(30)
        if self.producer.ident is not None:  # started
            self.producer.join(30)
        self.db.close()

    def summary(self, report: AuditReport) -> dict[str, Any]:
        recoveries = [f.recovered_in for f in self.faults if f.recovered_in is not None]
        return {
            "scenario": self.name,
            "mode": self.mode.name,
            "long": self.scale.long,
            **report.figures(),
            "faults": len(self.faults),
            "fault_kinds": sorted({f.kind for f in self.faults}),
            "recovered_in_max_s": round(max(recoveries), 2) if recoveries else None,
            "recovered_in_mean_s": round(sum(recoveries) / len(recoveries), 2) if recoveries else None,
            "workers_started": len(self.workers),
            "producer_errors": self.producer.errors,
            "seconds": round(time.monotonic() - self.started, 1),
        }


@contextlib.contextmanager
def held_transaction(url: str, statement: str, params: tuple[Any, ...] = ()) -> Iterator[psycopg.Connection[Any]]:
    """A session with a transaction open (after ``statement``) for the duration of the block."""
    conn = psycopg.connect(url, autocommit=False, application_name="chaos-holder")
    try:
        conn.execute(statement, params)
        yield conn
    finally:
        with contextlib.suppress(psycopg.Error):
            conn.rollback()
        conn.close()
