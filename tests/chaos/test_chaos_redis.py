"""Redis fails under the accelerator (Redis mode only): redis-server killed with
SIGKILL and restarted empty, FLUSHALL, and stopped (SIGSTOP) for several client
timeouts, a hung Redis, at random moments while the workers run thousands of jobs.

Redis only holds suggestions, so none of this may lose a job or let two
workers hold one: the audit decides. Beyond the audit, the scenario checks
what the workers do about it, from ``chaos.runs.via`` (how each executed job
was claimed):

- while Redis is dead or hung, jobs keep being claimed, through Postgres
  (every Redis call is bounded by ``PGQ_REDIS_TIMEOUT_SECONDS`` and a failure
  switches the process to the Postgres path);
- after each fault, jobs are claimed from Redis again, with no operator action
  (the reconciler rebuilds the flushed or restarted-empty mirror from Postgres,
  and the workers' circuit breakers close again);
- no worker process dies.

This reuses ``tests/redis_service.OwnedRedis`` (the redis-server of the Redis
failure tests in ``tests/integration/redis``), a server of this scenario's own.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from collections.abc import Callable, Iterator

import pytest

from chaos_harness import ChaosRun, Scale
from chaos_report import record
from redis_service import OwnedRedis

#: The workers' bound on every Redis call (the default, spelled out: the hang lasts longer).
REDIS_TIMEOUT = 0.5
#: A hung Redis stays stopped at least this many client timeouts.
HANG_TIMEOUTS = 4


@pytest.fixture
def own_redis() -> Iterator[OwnedRedis]:
    server = OwnedRedis().start()
    yield server
    if server.process is not None and server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)  # a failed test may leave it stopped
    server.stop()


@pytest.mark.parametrize("mode", ["redis"], indirect=True)
def test_redis_killed_flushed_and_hung_mid_run_loses_and_duplicates_nothing(
        chaos: Callable[..., ChaosRun], scale: Scale, own_redis: OwnedRedis, pytestconfig: pytest.Config) -> None:
    # Offered at 100 jobs/s, so that work is still flowing after the last fault (the workers
    # must be seen claiming through Redis again). In CI, Redis mode runs half the jobs (4,500:
    # six faults, each waited out until claims go through Redis again, take about 30 s).
    run = chaos(name="redis kill -9, FLUSHALL, SIGSTOP", jobs=scale.pick(9000, 12000), workers=3,
                concurrency=4, seed=7, redis=own_redis, rate=100.0, chunk=10,
                env={"PGQ_REDIS_TIMEOUT_SECONDS": str(REDIS_TIMEOUT)})
    run.start()
    # Claims through Redis before the first fault: the accelerator is really in use.
    run.poll(lambda: _claimed_since(run, "redis", dt.datetime.min.replace(tzinfo=dt.UTC)) >= 50,
             "jobs claimed through Redis")
    kinds = ["kill -9 + restart", "FLUSHALL", "SIGSTOP"] * scale.pick(2, 6)
    run.rng.shuffle(kinds)
    for kind in kinds:
        run.at_random_progress(60, scale.pick(120, 250))
        assert run.total - run.producer.sent > 300, "the plan must outlast the faults: enlarge it"
        _fail_redis(run, own_redis, kind)
    report = run.finish()
    record(pytestconfig, run.summary(report))

    assert report.violations == [], "\n".join(report.violations)
    assert report.lost == 0 and report.duplicated == 0
    assert [w.index for w in run.workers] == [0, 1, 2]  # Redis faults kill no worker
    assert len(run.faults) == len(kinds) and all(f.recovered_in is not None for f in run.faults)


def _fail_redis(run: ChaosRun, server: OwnedRedis, kind: str) -> None:
    """Inject one Redis fault, see the workers carry on through Postgres while Redis is
    gone or hung, lift it, and wait until jobs are claimed through Redis again."""
    ids = [w.worker_id for w in run.live() if w.worker_id]
    at = run.db.now()
    if kind == "FLUSHALL":
        with server.client() as client:
            client.flushall()
    else:
        assert server.process is not None
        if kind == "SIGSTOP":
            os.kill(server.process.pid, signal.SIGSTOP)
        else:
            server.kill()
        stopped = time.monotonic()
        # Redis is gone or hung: the workers carry on through Postgres meanwhile.
        run.poll(lambda: _claimed_since(run, "postgres", at) >= 20
                 and time.monotonic() - stopped >= HANG_TIMEOUTS * REDIS_TIMEOUT,
                 f"jobs claimed through Postgres while Redis is down ({kind})")
        if kind == "SIGSTOP":
            os.kill(server.process.pid, signal.SIGCONT)
        else:
            server.start()  # same port, empty (no persistence)
    lifted = run.db.now()
    fault = run.add_fault(f"redis {kind}", at, lifted, ids)
    fault.back_on_redis = True
    # Back on Redis without anyone's help: the mirror is rebuilt and claims use it again.
    run.poll(lambda: _claimed_since(run, "redis", lifted) >= 10, f"claims through Redis again after {kind}",
             timeout=60)


def _claimed_since(run: ChaosRun, via: str, since: dt.datetime) -> int:
    """Executions started after ``since`` of jobs claimed through ``via`` (postgres or redis)."""
    return int(run.db.one("SELECT count(*) FROM chaos.runs WHERE via = %s AND started_at > %s", (via, since)))
