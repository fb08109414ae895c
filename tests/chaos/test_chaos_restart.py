"""Postgres crashes and restarts mid-run (``pg_ctl stop -m immediate``, then start).

Every connection of every worker dies at once: pool connections, the LISTEN
connection, the handlers' own connections, and the producer's. The workers
must come back without operator action: claims and outcome writes retry, the
listener reconnects and LISTENs again, heartbeats resume. A handler whose
connection died fails its attempt and the job runs again; a job whose
enqueue call failed mid-restart is enqueued once (the producer checks its
unique keys). The audit proves nothing was lost or completed twice.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chaos_harness import ChaosRun, Scale
from chaos_report import record


def test_postgres_crash_and_restart_mid_run_recovers_without_operator(
        chaos: Callable[..., ChaosRun], scale: Scale, pytestconfig: pytest.Config) -> None:
    run = chaos(name="postgres restart", jobs=scale.pick(2500, 8000), workers=3, concurrency=4, seed=2)
    run.start()
    restarts = scale.pick(3, 8)
    for i in range(restarts):
        run.at_random_progress(100, 300)
        assert run.remaining() > 100, "the scenario must restart the server while work is left"
        ids = [r[0] for r in run.db.query("SELECT id FROM pgq.workers WHERE status = 'active'")]
        at = run.db.now()
        # Alternate a crash (immediate: no shutdown checkpoint, crash recovery at start) and a clean stop.
        run.cluster.stop("immediate" if i % 2 == 0 else "fast")
        assert not run.cluster.running()
        run.cluster.start()
        lifted = run.db.now()
        run.add_fault("postgres restart", at, lifted, ids)
        # Back to work without anyone's help: the same processes make progress again and
        # each one LISTENs again.
        run.wait_finished(run.finished() + 20, timeout=60)
        run.poll(lambda: run.listening() == {w.appname for w in run.live()}, "every worker to LISTEN again")
        assert len(run.live()) == 3
    report = run.finish()
    record(pytestconfig, run.summary(report))

    assert report.violations == [], "\n".join(report.violations)
    assert report.lost == 0 and report.duplicated == 0
    assert [w.index for w in run.workers] == [0, 1, 2]  # no worker died: the same three recovered
