"""Long jobs, slow outcome writes, short heartbeats, and kills: a success is never thrown away.

Every job works for seconds (3 to 5 s in CI, 10 to 30 s in the long version)
and every statement that writes completions (``complete_jobs``) first sleeps
(``pg_sleep`` in a test-only statement trigger on ``pgq.jobs``), so a job's
completion stays unwritten for seconds after its handler returned, its claim
well over 10 s old, while its worker heartbeats every 0.25 s. A heartbeat
rescues, as ``ClaimLost``, an owned job its worker does not list and claimed
over 10 s ago: a worker that stopped listing a job once its handler returned
would have the success thrown away and the job run again (issue 9, defect 1).
The trigger sleeps before the statement touches any row, so the rows are not
locked meanwhile (a rescue skips locked rows, which would hide the defect).
On top of that, workers are killed (``kill -9``) now and then; their jobs run
again, which is at-least-once and allowed.

The audit (``chaos_audit``) checks the usual invariants plus that no job ran
again after a handler of it returned while its worker was alive.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chaos_harness import ChaosRun, Scale
from chaos_report import record

# A statement trigger, BEFORE: it sleeps before the UPDATE locks any row. current_query() is
# the statement the client sent, so only the workers' completion writes sleep.
SLOW_COMPLETIONS = """
CREATE SEQUENCE chaos.slowed_completions;
CREATE FUNCTION chaos.slow_completions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_query() LIKE '%%complete_jobs(%%' THEN
        PERFORM nextval('chaos.slowed_completions'), pg_sleep(%(seconds)s);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER chaos_slow_completions BEFORE UPDATE ON pgq.jobs
    FOR EACH STATEMENT EXECUTE FUNCTION chaos.slow_completions();
"""


# The defect it guards against is the heartbeat's list of held jobs, the same in both modes;
# the run is long by nature (claims older than 10 s): Redis mode with --chaos-long.
@pytest.mark.chaos_short_modes("postgres")
@pytest.mark.timeout(900)  # the long version: about 3 minutes per mode
def test_long_jobs_with_slow_completions_never_run_again_after_a_success(
        chaos: Callable[..., ChaosRun], scale: Scale, pytestconfig: pytest.Config) -> None:
    ack_seconds = scale.pick(8.0, 6.0)
    run = chaos(name="long jobs, slow completions", jobs=scale.pick(40, 60), workers=3, concurrency=4, seed=9,
                job_ms=scale.pick((3000, 5000), (10000, 30000)), chunk=10, backlog=24,
                env={"PGQ_POOL_SIZE": "6", "PGQ_SHUTDOWN_GRACE_SECONDS": "40"})
    run.db.execute(SLOW_COMPLETIONS % {"seconds": ack_seconds})
    run.start()
    kills = scale.pick(2, 6)
    for _ in range(kills):
        run.at_random_progress(3, scale.pick(8, 20))
        victims = run.running_workers() or run.live()
        run.kill(run.rng.choice(victims))
    report = run.finish(timeout=scale.pick(180.0, 900.0))
    record(pytestconfig, run.summary(report))

    assert report.violations == [], "\n".join(report.violations)
    assert report.lost == 0 and report.duplicated == 0 and report.rerun_after_success == 0
    # The window was open: the completion writes slept, and a completion committed (after its
    # statement began, finished_at, and slept) on a claim more than 10 s old, the age at which
    # a heartbeat rescues an owned job its worker does not list.
    slowed, oldest = run.db.query("""
        SELECT (SELECT last_value FROM chaos.slowed_completions),
               max(e.finished_at - e.started_at) FROM pgq.job_executions e WHERE e.outcome = 'completed'""")[0]
    assert slowed >= 1 and oldest.total_seconds() + ack_seconds > 10.0
    assert [f.kind for f in run.faults].count("kill -9") == kills
