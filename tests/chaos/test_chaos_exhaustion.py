"""Connection-pool exhaustion and a slow database.

Two workers run 16 jobs at once each on a pool of 2 connections (claims,
outcome writes, heartbeats and maintenance share them), while:

- every statement that updates ``pgq.jobs`` sleeps up to 20 ms (a statement
  trigger calling ``pg_sleep``): claims and outcome writes are slow throughout;
- another session locks the running jobs' rows: outcome writes block, holding
  one of the two pool connections, until the lock is released;
- another session locks the ``workers`` rows: heartbeats (and the leader's
  stale sweep) block, holding a pool connection, until every worker's
  heartbeat is older than the stale limit; whatever wins the race after the
  release, a worker declared stale while alive has its late outcomes refused;
- the workers' role reaches its connection limit and some of their sessions
  are terminated: their replacements are refused ("too many connections for
  role") until the limit is lifted.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from psycopg import sql

from chaos_harness import WORKER_ROLE, ChaosRun, Scale, held_transaction
from chaos_report import record

SLOW = """
CREATE FUNCTION chaos.slow_statement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(random() * 0.02);
    RETURN NULL;
END $$;
CREATE TRIGGER chaos_slow BEFORE UPDATE ON pgq.jobs FOR EACH STATEMENT EXECUTE FUNCTION chaos.slow_statement();
"""

# Worker sessions waiting for a lock held by the session with the given pid.
BLOCKED_BY = ("SELECT count(DISTINCT application_name) FROM pg_stat_activity"
              " WHERE application_name LIKE 'chaos-w%%' AND %s = ANY(pg_blocking_pids(pid))")


def test_tiny_pool_slow_statements_held_locks_and_full_server_lose_nothing(
        chaos: Callable[..., ChaosRun], scale: Scale, pytestconfig: pytest.Config) -> None:
    # Offered at 200 jobs/s, so that every phase happens while work flows. The workers connect
    # as a role that is not a superuser, so that a connection limit binds them.
    run = chaos(name="pool exhaustion, slow db", jobs=scale.pick(2000, 6000), workers=2, concurrency=16, seed=4,
                env={"PGQ_POOL_SIZE": "2"}, rate=200.0, chunk=20, role=WORKER_ROLE)
    run.db.execute(SLOW)
    run.start()
    for _ in range(scale.pick(1, 3)):
        _lock_running_jobs(run)
        _lock_worker_rows(run)
        _refuse_new_connections(run)
        assert run.remaining() > 0, "the faults must land while work is left: lower the rate or add jobs"
    report = run.finish()
    record(pytestconfig, run.summary(report))

    assert report.violations == [], "\n".join(report.violations)
    assert report.lost == 0 and report.duplicated == 0
    # Every worker was declared stale while its heartbeat was blocked, or its rows were
    # rescued: at the least, the sweep ran after the release.
    assert {f.kind for f in run.faults} >= {"locked running jobs", "locked worker rows", "connection limit reached"}


def _lock_running_jobs(run: ChaosRun) -> None:
    """Lock the running jobs' rows until a worker's outcome write waits for them."""
    run.at_random_progress(50, 150)
    with psycopg.connect(run.url, application_name="chaos-holder") as held:
        # Until the statement finds running jobs to lock (between two claims there may be none).
        while not held.execute("SELECT id FROM pgq.jobs WHERE status = 'running' FOR NO KEY UPDATE").fetchall():
            held.rollback()
            run.poll(lambda: run.running_workers(), "a running job to lock")
        at = run.db.now()
        holder = held.info.backend_pid
        run.poll(lambda: run.db.one(BLOCKED_BY, (holder,)) >= 1, "an outcome write to wait for the lock")
        held.rollback()
    run.add_fault("locked running jobs", at, run.db.now(), [w.worker_id for w in run.live() if w.worker_id])


def _lock_worker_rows(run: ChaosRun) -> None:
    """Lock the workers' rows until every live worker's heartbeat is older than the stale limit."""
    run.at_random_progress(50, 150)
    stale_after = float(run.env["PGQ_STALE_AFTER_SECONDS"])
    with held_transaction(run.url, "SELECT id FROM pgq.workers FOR UPDATE") as held:
        at = run.db.now()
        holder = held.info.backend_pid
        run.poll(lambda: run.db.one(BLOCKED_BY, (holder,)) >= len(run.live()), "every heartbeat to wait for the lock")
        run.poll(lambda: run.db.one(
            "SELECT bool_and(last_heartbeat < now() - make_interval(secs => %s)) FROM pgq.workers"
            " WHERE status = 'active'", (stale_after * 1.5,)), "every heartbeat to age past the stale limit")
    run.add_fault("locked worker rows", at, run.db.now(), [w.worker_id for w in run.live() if w.worker_id])


def _refuse_new_connections(run: ChaosRun) -> None:
    """Let the workers' role open no new connection (its connection limit is reached),
    terminate some of their sessions, and once a replacement has been refused, lift the limit."""
    run.at_random_progress(50, 150)
    refused_before = run.cluster.log_text().count("too many connections for role")
    limit = sql.SQL("ALTER ROLE {} CONNECTION LIMIT {}")
    with run.cluster.admin() as admin:
        admin.execute(limit.format(sql.Identifier(WORKER_ROLE), sql.Literal(0)))
        try:
            at = run.db.now()
            sessions = run.db.query("SELECT pid FROM pg_stat_activity WHERE usename = %s"
                                    " AND application_name NOT LIKE '%%-rec'", (WORKER_ROLE,))
            for (pid,) in run.rng.sample(sessions, max(1, len(sessions) // 2)):
                run.db.query("SELECT pg_terminate_backend(%s, 5000)", (pid,))
            run.poll(lambda: run.cluster.log_text().count("too many connections for role") > refused_before,
                     "a worker's new connection to be refused")
        finally:
            admin.execute(limit.format(sql.Identifier(WORKER_ROLE), sql.Literal(-1)))
    run.add_fault("connection limit reached", at, run.db.now(), [w.worker_id for w in run.live() if w.worker_id])
