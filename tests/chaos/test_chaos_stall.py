"""A stalled-but-alive worker: SIGSTOP, then SIGCONT once its jobs were rescued.

A stopped process sends no heartbeat, so the maintenance leader (another
worker) marks it stale after a second and its running jobs run again
elsewhere. When it is continued, its handlers finish and it tries to write
outcomes for attempts it no longer holds: the fence (``worker_id`` and
``attempt`` in the WHERE clause) refuses them, so each job completes once,
with the result of the attempt that really held it. Its next heartbeat tells
it which jobs it lost, and it goes back to work.

The second half stops a worker inside the maintenance leader's transaction,
holding the leader lock: the server must end that session (it idles in the
transaction) so that another worker takes the lead and rescues the stalled
worker's jobs.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from chaos_harness import ChaosRun, Scale, WorkerProc
from chaos_report import record


def test_stalled_workers_jobs_are_rescued_and_its_late_completions_refused(
        chaos: Callable[..., ChaosRun], scale: Scale, pytestconfig: pytest.Config) -> None:
    # Offered at 100 jobs/s, so that the stalls happen while work flows.
    run = chaos(name="stalled worker (SIGSTOP)", jobs=scale.pick(2000, 6000), workers=3, concurrency=4, seed=6,
                rate=100.0, chunk=10)
    run.start()
    stalls = scale.pick(3, 8)
    for _ in range(stalls):
        run.at_random_progress(60, 150)
        _stall_until_rescued(run, run.poll(lambda: _in_slow_handler(run), "a worker in the middle of a slow job"))

    # A worker that stops itself inside the leader's transaction (right after the stale sweep).
    stalling = run.start_worker({"CHAOS_STALL_LEADER": "1"})
    run.poll(lambda: stalling.state() == "T", "the leader to stop inside its transaction")
    at = run.db.now()
    run.poll(lambda: run.db.one("SELECT status::text FROM pgq.workers WHERE pid = %s", (stalling.pid,)) == "stale",
             "another worker to take the lead and mark the stalled leader stale", timeout=30)
    stalling.proc.send_signal(signal.SIGCONT)
    # Recovery counts from the stall: the others must not need the SIGCONT to carry on.
    run.add_fault("SIGSTOP in the leader's transaction", at, at, run.worker_ids_of(stalling))
    _wait_back_at_work(run, stalling)

    report = run.finish()
    record(pytestconfig, run.summary(report))
    assert report.violations == [], "\n".join(report.violations)
    assert report.lost == 0 and report.duplicated == 0
    # Each stall caught a handler mid-job: it went on after its attempt had been taken from it,
    # and whatever it returned was refused (the audit checked that every stored result is the
    # one of the attempt that completed).
    assert report.late >= stalls


def _in_slow_handler(run: ChaosRun) -> WorkerProc | None:
    """A live worker whose handler is in the first half of a job of 200 ms or more."""
    rows = run.db.query(
        "SELECT r.pid FROM chaos.runs r JOIN pgq.jobs j ON j.id = r.job_id AND j.attempts = r.attempt"
        " WHERE r.ended_at IS NULL AND j.status = 'running' AND (j.payload->>'ms')::int >= 200"
        "   AND clock_timestamp() - r.started_at < make_interval(secs => (j.payload->>'ms')::int / 2000.0)")
    pids = {row[0] for row in rows}
    return next((w for w in run.live() if w.pid in pids), None)


def _stall_until_rescued(run: ChaosRun, victim: WorkerProc) -> None:
    held = [r[0] for r in run.db.query(
        "SELECT j.id FROM pgq.jobs j JOIN pgq.workers w ON w.id = j.worker_id"
        " WHERE w.pid = %s AND j.status = 'running'", (victim.pid,))]
    victim.proc.send_signal(signal.SIGSTOP)
    at = run.db.now()
    run.poll(lambda: victim.state() == "T", "the worker to stop")
    # Rescued (attempt closed as lost) and finished by the others, while it is still stopped.
    run.poll(lambda: run.db.one(
        "SELECT bool_and(j.status IN ('completed', 'dead') OR j.worker_id IS DISTINCT FROM w.id)"
        " FROM pgq.jobs j, pgq.workers w WHERE j.id = ANY(%s) AND w.pid = %s", (held, victim.pid)),
        "the stalled worker's jobs to be rescued", timeout=30)
    assert run.db.one("SELECT status::text FROM pgq.workers WHERE pid = %s", (victim.pid,)) == "stale"
    run.poll(lambda: run.db.one("SELECT bool_and(status IN ('completed', 'dead')) FROM pgq.jobs WHERE id = ANY(%s)",
                                (held,)), "the rescued jobs to finish elsewhere", timeout=30)
    victim.proc.send_signal(signal.SIGCONT)
    run.add_fault("SIGSTOP", at, at, run.worker_ids_of(victim))
    _wait_back_at_work(run, victim)


def _wait_back_at_work(run: ChaosRun, worker: WorkerProc) -> None:
    """The continued worker is active again (its heartbeat re-activates it) and runs jobs."""
    since = run.db.now()
    run.poll(lambda: run.db.one("SELECT status::text FROM pgq.workers WHERE pid = %s", (worker.pid,)) == "active",
             "the continued worker to be active again")
    if run.remaining() > 50:
        run.poll(lambda: run.db.one("SELECT count(*) FROM chaos.runs WHERE pid = %s AND started_at > %s",
                                    (worker.pid, since)), "the continued worker to run jobs again")
