"""pgq.testing's parts that need no database: the clock's intervals, the run result, the
enqueued-job descriptions, the plugin's app loader and configuration."""

from __future__ import annotations

import datetime as dt
import math

import pytest

import pgq
from pgq.job import Job, JobStatus
from pgq.settings import environment_for_tests
from pgq.testing import Attempt, EnqueuedJob, RunResult
from pgq.testing.clock import MAX_ADVANCE, interval
from pgq.testing.databases import find_running
from pgq.testing.plugin import load_app

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(("value", "expected"), [
    (0, dt.timedelta(0)), (90, dt.timedelta(seconds=90)), (1.5, dt.timedelta(seconds=1.5)),
    (dt.timedelta(hours=2), dt.timedelta(hours=2)), (MAX_ADVANCE, MAX_ADVANCE),
])
def test_the_clock_takes_seconds_or_a_timedelta(value: float | dt.timedelta, expected: dt.timedelta) -> None:
    assert interval(value, "by") == expected


@pytest.mark.parametrize("value", [-1, dt.timedelta(seconds=-1), math.inf, math.nan, True, "60", None,
                                   MAX_ADVANCE + dt.timedelta(seconds=1), MAX_ADVANCE.total_seconds() + 1])
def test_the_clock_refuses_what_is_not_a_forward_interval(value: object) -> None:
    with pytest.raises(pgq.ValidationError, match="^by must be"):
        interval(value, "by")


def _job(job_id: int, status: JobStatus, result: object = None) -> Job:
    return Job(job_id, "default", "t", {}, 3, status, T0, 1, 3, None, None, None, None, None, result, None, T0, T0)


def _attempt(job_id: int, n: int, outcome: str) -> Attempt:
    error = None if outcome == "completed" else "ValueError"
    return Attempt(job_id, "t", n, outcome, error, error and "bad", error and "Traceback ...", 1.0)


def test_the_run_result_sorts_jobs_by_their_status_now() -> None:
    result = RunResult(
        attempts=[_attempt(2, 1, "failed"), _attempt(1, 1, "completed"), _attempt(2, 2, "completed"),
                  _attempt(3, 1, "failed"), _attempt(4, 1, "timed_out")],
        jobs={1: _job(1, JobStatus.COMPLETED, {"ok": 1}), 2: _job(2, JobStatus.COMPLETED, 2),
              3: _job(3, JobStatus.RETRYING), 4: _job(4, JobStatus.DEAD)})
    assert result.ran == [2, 1, 3, 4]
    assert (result.completed, result.retrying, result.dead) == ([2, 1], [3], [4])
    assert result.results == {2: 2, 1: {"ok": 1}}
    assert [(a.job_id, a.attempt) for a in result.failed] == [(2, 1), (3, 1), (4, 1)]
    with pytest.raises(AssertionError, match=r"^3 attempt\(s\) failed:\njob 2 \(t\) attempt 1 failed: ValueError: bad\n"
                                             r"Traceback \.\.\."):
        result.raise_for_failures()
    RunResult([_attempt(1, 1, "completed")], {1: _job(1, JobStatus.COMPLETED)}).raise_for_failures()


def test_an_enqueued_job_describes_itself_on_one_line() -> None:
    job = EnqueuedJob(7, "emails", "mail.send", {"to": "a@b.c", "cc": []}, 5, JobStatus.WAITING, T0, 0, 3, None,
                      "welcome:1", None, None, None, None, None, T0, T0, delay=90.0, depends_on=(3, 5))
    assert job.describe() == ('job 7: task=\'mail.send\' queue=\'emails\' payload={"cc": [], "to": "a@b.c"} priority=5 '
                              "status=waiting delay=90 unique_key='welcome:1' depends_on=[3, 5]")


@pytest.mark.parametrize(("spec", "message"), [
    ("myapp", "MODULE:ATTRIBUTE"), (":q", "MODULE:ATTRIBUTE"), ("no_such_module_here:q", "cannot import"),
    ("pgq:connect", "is not a pgq.Queue"), ("pgq:nothing", "is not a pgq.Queue"),
])
def test_pgq_app_must_name_a_queue(spec: str, message: str) -> None:
    with pytest.raises(pgq.ConfigurationError, match=message):
        load_app(spec)


def test_a_configured_server_that_does_not_answer_is_an_error_naming_the_setting() -> None:
    with pytest.raises(pgq.ConfigurationError, match=r"^PGQ_TEST_DATABASE_URL is set but postgresql://u:\*\*\*@"):
        find_running("postgresql://u:secret@127.0.0.1:1/postgres", "PGQ_TEST_DATABASE_URL")


def test_the_kit_reads_its_two_variables_in_settings() -> None:
    assert environment_for_tests({}) == (None, "unix:///var/run/docker.sock")
    assert environment_for_tests({"PGQ_TEST_DATABASE_URL": "postgresql://x/y", "DOCKER_HOST": "tcp://d:2375"}) == (
        "postgresql://x/y", "tcp://d:2375")
