"""pgq.job.TRANSITIONS, the allowed-transition table, and next_status."""

from __future__ import annotations

import itertools

import pytest

import pgq
from pgq.job import FINAL_STATUSES, LIVE_STATUSES, TRANSITIONS, JobStatus, next_status

# The transition verbs of STYLE.md §5 (plus the two internal variants of the table).
VERBS = {"release", "cancel", "claim", "complete", "retry", "fail", "rescue", "rescue_dead", "requeue"}


def test_status_values_are_the_sql_enum_values() -> None:
    assert [s.value for s in JobStatus] == [
        "waiting", "queued", "running", "retrying", "completed", "dead", "cancelled",
    ]
    assert str(JobStatus.RUNNING) == "running"
    assert JobStatus("dead") is JobStatus.DEAD


def test_final_and_live_statuses_partition_all_statuses() -> None:
    assert FINAL_STATUSES == {JobStatus.COMPLETED, JobStatus.DEAD, JobStatus.CANCELLED}
    assert FINAL_STATUSES | LIVE_STATUSES == set(JobStatus)
    assert not FINAL_STATUSES & LIVE_STATUSES
    assert [s for s in JobStatus if s.is_final] == [JobStatus.COMPLETED, JobStatus.DEAD, JobStatus.CANCELLED]


def test_table_uses_only_known_statuses_and_verbs() -> None:
    for (source, verb), target in TRANSITIONS.items():
        assert isinstance(source, JobStatus) and isinstance(target, JobStatus)
        assert verb in VERBS
        assert source != target


def test_final_statuses_have_no_outgoing_move_except_requeue_of_dead() -> None:
    outgoing = {(s, v): t for (s, v), t in TRANSITIONS.items() if s in FINAL_STATUSES}
    assert outgoing == {(JobStatus.DEAD, "requeue"): JobStatus.QUEUED}


def test_the_lifecycle_of_the_spec() -> None:
    expected = {
        (JobStatus.WAITING, "release"): JobStatus.QUEUED,
        (JobStatus.WAITING, "cancel"): JobStatus.CANCELLED,
        (JobStatus.QUEUED, "claim"): JobStatus.RUNNING,
        (JobStatus.QUEUED, "cancel"): JobStatus.CANCELLED,
        (JobStatus.RETRYING, "claim"): JobStatus.RUNNING,
        (JobStatus.RETRYING, "cancel"): JobStatus.CANCELLED,
        (JobStatus.RUNNING, "complete"): JobStatus.COMPLETED,
        (JobStatus.RUNNING, "retry"): JobStatus.RETRYING,
        (JobStatus.RUNNING, "fail"): JobStatus.DEAD,
        (JobStatus.RUNNING, "rescue"): JobStatus.RETRYING,
        (JobStatus.RUNNING, "rescue_dead"): JobStatus.DEAD,
        (JobStatus.RUNNING, "release"): JobStatus.QUEUED,
        (JobStatus.RUNNING, "cancel"): JobStatus.CANCELLED,
        (JobStatus.DEAD, "requeue"): JobStatus.QUEUED,
    }
    assert TRANSITIONS == expected


def test_only_a_running_job_can_complete_or_fail() -> None:
    for verb in ("complete", "fail", "retry", "rescue", "rescue_dead"):
        sources = {s for (s, v) in TRANSITIONS if v == verb}
        assert sources == {JobStatus.RUNNING}, verb


def test_every_live_status_can_reach_a_final_status() -> None:
    for start in LIVE_STATUSES:
        seen, frontier = {start}, [start]
        while frontier:
            current = frontier.pop()
            for (s, _verb), t in TRANSITIONS.items():
                if s == current and t not in seen:
                    seen.add(t)
                    frontier.append(t)
        assert seen & FINAL_STATUSES, start


def test_every_live_status_can_be_cancelled() -> None:
    for status in LIVE_STATUSES:
        assert next_status(status, "cancel") is JobStatus.CANCELLED


@pytest.mark.parametrize(("move", "target"), list(TRANSITIONS.items()), ids=lambda x: str(x))
def test_next_status_follows_the_table(move: tuple[JobStatus, str], target: JobStatus) -> None:
    assert next_status(*move) is target


FORBIDDEN = [
    (status, verb)
    for status, verb in itertools.product(JobStatus, sorted(VERBS | {"dequeue", "prune", ""}))
    if (status, verb) not in TRANSITIONS
]


@pytest.mark.parametrize(("status", "verb"), FORBIDDEN, ids=lambda x: str(x))
def test_next_status_raises_for_forbidden_moves(status: JobStatus, verb: str) -> None:
    with pytest.raises(pgq.ValidationError) as info:
        next_status(status, verb)
    assert status.value in str(info.value)
    assert f"cannot {verb}" in str(info.value)


def test_forbidden_moves_include_the_dangerous_ones() -> None:
    # Spot checks that matter for the invariants: no resurrection of a finished
    # job, no completion without a claim, no double completion.
    dangerous = [
        (JobStatus.COMPLETED, "complete"),
        (JobStatus.COMPLETED, "requeue"),
        (JobStatus.CANCELLED, "requeue"),
        (JobStatus.CANCELLED, "claim"),
        (JobStatus.DEAD, "claim"),
        (JobStatus.QUEUED, "complete"),
        (JobStatus.RETRYING, "complete"),
        (JobStatus.WAITING, "claim"),
        (JobStatus.COMPLETED, "cancel"),
        (JobStatus.DEAD, "cancel"),
    ]
    for move in dangerous:
        assert move in FORBIDDEN
