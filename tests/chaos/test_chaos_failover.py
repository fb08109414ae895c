"""Failover to a streaming standby mid-run (issue 14, item 1).

A test-owned primary and a hot standby cloned from it with ``pg_basebackup``
(``chaos_topology.StandbyPair``). Producer and workers use one multi-host URL
(``target_session_attrs=read-write``). Mid-run the primary is killed (SIGKILL to
every server process) and the standby promoted; nobody restarts or reconfigures
a worker or the producer: they find the new primary by themselves.

- Synchronous replication: a commit returns once the standby flushed it, so the
  full audit holds on the new primary: nothing whose enqueue returned is lost,
  no concurrent double execution, nothing completed runs again as if new.
- Asynchronous replication: a commit returns before the standby has it, so a
  failover may lose the last acknowledged transactions; on this machine the
  standby is a few ms behind, so the ``async-lagging`` case holds the primary's
  WAL sender (SIGSTOP) while about 40 jobs finish, as a slow link would. The test measures that
  window from the dead primary's WAL (commits after the standby's last replayed
  record) and from the producer's side (acknowledged enqueues missing on the
  new primary, which it enqueues again so that the run can drain), and checks
  that the pair converges: every job ends, the same workers carry on.

Both record the recovery time: to the first completion after the kill, and to
the completion rate of the 3 s before the kill (80 % of it, over 1 s).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import pgq
from chaos_harness import BACKOFF, MAX_ATTEMPTS, QUEUE, TASK, ChaosRun, Mode, Scale
from chaos_report import record
from chaos_topology import StandbyPair, throughput_recovery

pytestmark = pytest.mark.parametrize("mode", ["postgres"], indirect=True)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # The plain asynchronous case (a standby a few ms behind) runs with --chaos-long only:
    # on loopback its window is nearly always empty, which the lagging case does not leave to luck.
    long = metafunc.config.getoption("--chaos-long", default=False)
    metafunc.parametrize("pair", ["sync", "async-lagging", *(["async"] if long else [])], indirect=True)


@pytest.fixture
def pair(request: pytest.FixtureRequest) -> Iterator[StandbyPair]:
    standby_pair = StandbyPair(synchronous=request.param == "sync")
    standby_pair.kind = request.param
    try:
        yield standby_pair
    finally:
        standby_pair.destroy()  # both servers and their directories, even when the test failed


def test_failover_to_promoted_standby_keeps_the_promises(pair: StandbyPair, mode: Mode, scale: Scale,
                                                         tmp_path: Path, pytestconfig: pytest.Config) -> None:
    url = pair.start(f"chaos_failover_{os.getpid()}")
    run = ChaosRun(pair.standby, url, mode, tmp_path, name=f"failover ({pair.kind} standby)", scale=scale,
                   jobs=scale.pick(900, 8000), workers=3, concurrency=4, seed=14)
    try:
        run.start()
        run.wait_finished(run.total // 3, timeout=120)
        if pair.kind == "async-lagging":
            # The standby falls behind (the primary's WAL sender stopped) while about 40 more jobs finish.
            pair.hold_sender()
            run.wait_finished(run.finished() + 40, timeout=60)
        lag_bytes, lag_s = pair.replication_lag()
        ids = [r[0] for r in run.db.query("SELECT id FROM pgq.workers WHERE status = 'active'")]
        at = run.db.now()
        lost_wal = pair.fail_over()
        lifted = run.db.now()  # the multi-host URL reaches the promoted standby
        run.add_fault(f"failover ({pair.kind})", at, lifted, ids)
        assert run.remaining() > 100, "the failover must happen while work is left"
        # Back to work without anyone's help: the same processes, now on the new primary.
        run.wait_finished(run.finished() + 50, timeout=60)
        missing = _reenqueue_lost_enqueues(run, url)
        report = run.finish()
        first, full = throughput_recovery(run.db.conn(), at)
        summary = {**run.summary(report), "lost_wal_bytes": lost_wal.bytes, "lost_commits": lost_wal.commits,
                   "lost_enqueues": missing, "lag_before_kill_bytes": lag_bytes, "lag_before_kill_s": lag_s,
                   "first_completion_s": first, "full_throughput_s": full,
                   "violations": len(report.violations), "violation_samples": report.violations[:3]}
        record(pytestconfig, summary)
    finally:
        run.close()

    assert [w.index for w in run.workers] == [0, 1, 2], "no worker died: the same three carried on"
    assert first is not None and full is not None, "work resumed on the new primary"
    if pair.synchronous:
        assert missing == 0, "synchronous: an enqueue that returned is on the standby"
        assert report.violations == [], "\n".join(report.violations)
        assert report.lost == 0 and report.duplicated == 0 and report.rerun_after_success == 0
    elif lost_wal.commits == 0:
        # Nothing acknowledged was lost this time: then nothing may differ from the synchronous case.
        assert missing == 0
        assert report.violations == [], "\n".join(report.violations)
    else:
        # The window: acknowledged commits the new primary never got. Everything still ends
        # (the jobs lost with their enqueue were enqueued again above).
        assert report.lost == 0
    if pair.kind == "async-lagging":
        assert lost_wal.commits > 0, "a standby held back loses acknowledged commits in a failover"


def _reenqueue_lost_enqueues(run: ChaosRun, url: str) -> int:
    """Stop the producer's flow a moment, find the jobs whose enqueue call returned and that the
    new primary does not have (only an asynchronous failover can lose them), enqueue them again
    (as a producer replaying its own log would), and return how many there were."""
    run.producer.pause(True)
    run.poll(lambda: run.producer.holding.is_set() or not run.producer.is_alive(), "the producer to pause")
    acknowledged = run.plan[:run.producer.sent]
    keys = [f"chaos:{item['n']}" for item in acknowledged]
    present = {r[0] for r in run.db.query("SELECT unique_key FROM pgq.jobs WHERE unique_key = ANY(%s)", (keys,))}
    lost = [item for item in acknowledged if f"chaos:{item['n']}" not in present]
    if lost:
        with pgq.Queue(pgq.Settings(database_url=url, schema="pgq"), strict_tasks=False) as q:
            q.enqueue_many([q.job_spec(TASK, item, queue=QUEUE, max_attempts=MAX_ATTEMPTS[item["kind"]],
                                       unique_key=f"chaos:{item['n']}", retry=BACKOFF) for item in lost])
    run.producer.pause(False)
    return len(lost)
