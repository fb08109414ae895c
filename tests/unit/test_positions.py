"""The worker's claim positions and its "started through" watermark (``pgq.worker.positions``).

Pure: the runner is a dict of job states, the clock a ``ManualClock``. The
expected watermarks follow the protocol (README, "What a worker must do"): the
lowest position still outstanding or held but not started, minus one.
"""

from __future__ import annotations

import datetime as dt

import psycopg
from psycopg_pool import PoolTimeout

from pgq.clock import ManualClock
from pgq.job import Job, JobStatus
from pgq.worker.positions import (CLAIM_LOST_AFTER_SECONDS, REPORT_EVERY_SECONDS, GONE, RUNNING, START_GRACE_SECONDS, WAITING,
                                  Positions, reply_may_be_lost)

T = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def job(job_id: int) -> Job:
    return Job(job_id, "default", "t", {}, 3, JobStatus.RUNNING, T, 1, 3, None, None, None, T, None, None, None, T, T)


class Runner:
    """Job id -> WAITING / RUNNING (absent: GONE)."""

    def __init__(self) -> None:
        self.jobs: dict[int, int] = {}

    def state(self, job_id: int) -> int:
        return self.jobs.get(job_id, GONE)

    def take(self, *ids: int) -> None:
        """The claim loop hands jobs over: buffered."""
        for i in ids:
            self.jobs[i] = WAITING


def make() -> tuple[Positions, Runner, ManualClock]:
    runner, clock = Runner(), ManualClock()
    return Positions(runner.state, clock), runner, clock


def claimed(p: Positions, runner: Runner, n: int, ids: list[int]) -> int:
    """A claim of ``n`` returning ``ids``, handed to the runner; returns its base."""
    base, _ = p.reserve(n)
    p.returned(base, [job(i) for i in ids])
    runner.take(*ids)
    p.dispatched(ids)
    return base


def test_positions_count_what_was_asked_for_and_the_watermark_what_started() -> None:
    p, runner, clock = make()
    assert p.reserve(3) == (0, 0)  # nothing asked before; nothing received
    p.returned(0, [job(10), job(11)])  # positions 1, 2; position 3 found no job
    assert p.watermark() == 0  # received, not in the runner yet
    runner.take(10, 11)
    p.dispatched([10, 11])
    assert p.watermark() == 0  # buffered
    runner.jobs[10] = RUNNING
    assert p.watermark() == 0  # seen running: the handler may not have been entered yet
    clock.advance(START_GRACE_SECONDS / 2)
    assert p.watermark() == 0
    clock.advance(START_GRACE_SECONDS / 2)
    assert p.watermark() == 1
    del runner.jobs[11]  # finished (or released): it counts as started
    assert p.watermark() == 3  # and position 3 held no job
    # The next claim takes positions 4..8 whatever it returns; its own are outstanding.
    assert p.reserve(5) == (3, 3)
    assert p.watermark() == 3


def test_a_claim_in_flight_holds_the_watermark_below_its_positions_even_when_a_later_one_returns() -> None:
    p, runner, _ = make()
    first, _ = p.reserve(2)
    second = claimed(p, runner, 2, [20, 21])
    del runner.jobs[20], runner.jobs[21]  # the later claim's jobs even finished
    assert (first, second) == (0, 2)
    assert p.watermark() == 0
    p.returned(first, [])  # found nothing (or failed before sending: a pool timeout)
    assert p.watermark() == 4


def test_a_claim_whose_reply_may_be_lost_holds_its_positions_until_a_heartbeat_after_the_claimlost_age() -> None:
    p, runner, clock = make()
    base, _ = p.reserve(4)
    p.returned(base, [], psycopg.OperationalError("server closed the connection unexpectedly"))
    claimed(p, runner, 1, [30])
    del runner.jobs[30]
    assert p.watermark() == 0  # its jobs may be this worker's in the database, never started
    p.heartbeat_done(clock.monotonic() + CLAIM_LOST_AFTER_SECONDS - 1)  # too early: not rescued yet
    assert p.watermark() == 0
    clock.advance(CLAIM_LOST_AFTER_SECONDS + 2)
    p.heartbeat_done(clock.monotonic())  # that heartbeat rescued them (ClaimLost), attempts given back
    assert p.watermark() == 5


def test_only_a_broken_connection_may_have_lost_a_committed_claim() -> None:
    assert reply_may_be_lost(psycopg.OperationalError("consuming input failed: EOF"))
    assert not reply_may_be_lost(PoolTimeout("no connection"))
    refused = psycopg.errors.lookup("57014")("canceling statement due to statement timeout")
    assert not reply_may_be_lost(refused)
    assert reply_may_be_lost(RuntimeError("a bug after the claim returned"))


def test_a_job_claimed_again_is_held_at_its_new_position() -> None:
    p, runner, clock = make()
    claimed(p, runner, 1, [40])  # position 1, buffered
    claimed(p, runner, 1, [41])  # position 2
    runner.jobs[41] = RUNNING
    # Job 40 was given back by a rescue and claimed again by this worker: position 3.
    claimed(p, runner, 1, [40])
    assert p.watermark() == 1  # position 1 is no longer job 40's; 41 (at 2) is in its grace
    clock.advance(START_GRACE_SECONDS)
    assert p.watermark() == 2  # 40 (at 3) is still buffered
    runner.jobs[40] = RUNNING
    assert p.watermark() == 2
    clock.advance(START_GRACE_SECONDS)
    assert p.watermark() == 3


def test_jobs_set_aside_for_a_release_count_as_not_started_until_released() -> None:
    p, runner, clock = make()
    claimed(p, runner, 2, [50, 51])
    runner.jobs[50] = RUNNING
    assert p.watermark() == 0
    clock.advance(START_GRACE_SECONDS)

    def take() -> list[int]:
        del runner.jobs[51]  # out of the runner, not released yet
        return [51]

    assert p.set_aside(take) == [51]
    assert p.watermark() == 1 and p.holding() == [51]
    p.dispatched([51])  # released
    assert p.watermark() == 2 and p.holding() == []


def test_held_jobs_not_in_the_runner_are_listed_for_the_heartbeat() -> None:
    p, _, _ = make()
    base, _ = p.reserve(2)
    p.returned(base, [job(60), job(61)])
    assert sorted(p.holding()) == [60, 61]
    p.dispatched([60])
    assert p.holding() == [61]


def test_a_lost_job_claimed_again_while_the_heartbeat_was_out_is_not_acted_on() -> None:
    p, runner, _ = make()
    claimed(p, runner, 2, [70, 71])
    acted: list[int] = []
    with p.watching() as since:
        # The heartbeat is out; the database answers that 70 and 71 are lost (rescued),
        # and meanwhile a claim of this worker got 71 back (same attempt number).
        claimed(p, runner, 1, [71])
        p.unless_claimed_again(since, [70, 71], acted.append)
    assert acted == [70]
    with p.watching() as since:
        p.unless_claimed_again(since, [71], acted.append)  # a later heartbeat: 71 lost for real
    assert acted == [70, 71]


def test_the_final_watermark_counts_every_job_the_runner_started() -> None:
    """At a clean deregistration the worker is alive: a started handler runs whatever
    happens now, so it pays (interrupted) rather than being given back."""
    p, runner, _ = make()
    claimed(p, runner, 3, [80, 81, 82])
    runner.jobs[80] = runner.jobs[81] = RUNNING
    assert p.watermark() == 0
    assert p.watermark(final=True) == 2


def test_a_claim_carries_the_watermark_at_most_every_report_interval_and_only_when_it_moved() -> None:
    p, runner, clock = make()
    assert claimed(p, runner, 1, [1]) == 0  # sent watermark 0 with it
    del runner.jobs[1]  # finished: the watermark is 1 now
    base, sent = p.reserve(1)
    assert (base, sent) == (1, None)  # the last report was just now
    p.returned(base, [])
    clock.advance(REPORT_EVERY_SECONDS)
    base, sent = p.reserve(1)
    assert (base, sent) == (2, 2)
    p.returned(base, [job(3)])  # position 3: buffered, not started
    runner.take(3)
    p.dispatched([3])
    clock.advance(REPORT_EVERY_SECONDS)
    assert p.reserve(1) == (3, None)  # not moved since
    assert p.watermark() == 2  # the heartbeat always reports it
