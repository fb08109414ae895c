"""Backends killed with ``pg_terminate_backend``: under load, any of a worker's
sessions (pool, LISTEN, its handlers' own); then, with the workers idle, their
LISTEN sessions on purpose.

The workers poll only every 30 s here, so an idle worker that did not LISTEN
again would not see new work for 30 s: prompt pickups after the LISTEN
sessions were killed prove that each worker noticed, reconnected and
LISTENed again; jobs enqueued while no worker could LISTEN (new connections
to the database refused) prove that they catch up by polling meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from psycopg import sql

from chaos_harness import LISTEN_ROLE, ChaosRun, Scale
from chaos_report import record

POLL = 30.0  # seconds; far longer than any wait below


def test_terminated_backends_and_listen_sessions_are_replaced_and_nothing_is_missed(
        chaos: Callable[..., ChaosRun], scale: Scale, pytestconfig: pytest.Config) -> None:
    run = chaos(name="pg_terminate_backend", jobs=scale.pick(2500, 8000), workers=3, concurrency=4, seed=3,
                env={"PGQ_POLL_INTERVAL_SECONDS": str(POLL)})
    run.start()

    # Under load: a random third of the workers' sessions, repeatedly.
    for _ in range(scale.pick(6, 20)):
        run.at_random_progress(40, 120)
        sessions = run.db.query("SELECT pid, application_name FROM pg_stat_activity"
                                " WHERE application_name LIKE 'chaos-w%%'")
        victims = run.rng.sample(sessions, max(1, len(sessions) // 3))
        at = run.db.now()
        for pid, _ in victims:
            run.db.query("SELECT pg_terminate_backend(%s)", (pid,))
        names = {name.removesuffix("-rec") for _, name in victims}
        ids = [w.worker_id for w in run.live() if w.appname in names and w.worker_id]
        run.add_fault("terminate backends", at, at, ids)
        run.poll(lambda: run.listening() == {w.appname for w in run.live()}, "every worker to LISTEN again")

    # Idle workers: nothing wakes them for POLL seconds but a notification.
    run.producer.pause(True)
    run.poll(lambda: run.producer.holding.is_set() or not run.producer.is_alive(), "the producer to hold")
    run.poll(lambda: run.finished() >= run.producer.sent, "the jobs enqueued so far to finish")
    everyone = {w.appname for w in run.live()}
    assert run.listening() == everyone

    # 1. LISTEN sessions killed while no new one may start (the workers LISTEN as a role of
    #    their own): jobs enqueued now notify nobody; the workers must poll while they reconnect.
    before = run.listen_backends()
    refuse = sql.SQL("ALTER ROLE {} {}").format(sql.Identifier(LISTEN_ROLE), sql.SQL("NOLOGIN"))
    allow = sql.SQL("ALTER ROLE {} {}").format(sql.Identifier(LISTEN_ROLE), sql.SQL("LOGIN"))
    with run.cluster.admin() as admin:
        admin.execute(refuse)
        try:
            at = run.db.now()
            for pid in before.values():
                run.db.query("SELECT pg_terminate_backend(%s)", (pid,))
            run.poll(lambda: not run.listening(), "every LISTEN session to be gone")
            run.enqueue_extra(5, "missed")
            run.poll(lambda: run.labelled_done("missed"), "jobs enqueued while nobody listened", timeout=POLL / 3)
            assert not run.listening()
        finally:
            admin.execute(allow)
    run.add_fault("LISTEN sessions terminated", at, run.db.now(), [w.worker_id for w in run.live() if w.worker_id])
    run.poll(lambda: run.listening() == everyone, "every worker to LISTEN again", timeout=POLL / 3)
    after = run.listen_backends()
    assert set(after.values()).isdisjoint(before.values())  # new sessions, not survivors

    # 2. With every worker idle and listening again: a notification wakes them at once.
    run.enqueue_extra(5, "woken")
    run.poll(lambda: run.labelled_done("woken"), "jobs enqueued after LISTEN came back", timeout=POLL / 3)
    pickup = run.db.one("SELECT max(e.started_at - j.created_at) FROM pgq.jobs j"
                        " JOIN pgq.job_executions e ON e.job_id = j.id AND e.attempt = 1"
                        " WHERE j.payload->>'label' IN ('missed', 'woken')")
    assert pickup.total_seconds() < POLL / 3

    run.producer.pause(False)
    report = run.finish()
    record(pytestconfig, run.summary(report))
    assert report.violations == [], "\n".join(report.violations)
    assert report.lost == 0 and report.duplicated == 0

