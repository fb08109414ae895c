"""Tick arithmetic of periodic schedules (``pgq.scheduling.cron``): which ticks a leader
enqueues after downtime under each catch-up policy, and the validation of a
schedule. Expected ticks are written out by hand from the cron expressions."""

from __future__ import annotations

import datetime as dt

import pytest

from pgq.errors import ValidationError
from pgq.scheduling.cron import Schedule, due_ticks, next_tick


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def test_next_tick_is_strictly_after_the_given_time() -> None:
    assert next_tick("*/5 * * * *", "UTC", at("2026-01-01T00:05")) == at("2026-01-01T00:10")
    assert next_tick("*/5 * * * *", "UTC", at("2026-01-01T00:04:59")) == at("2026-01-01T00:05")


def test_next_tick_reads_the_expression_in_its_time_zone() -> None:
    # 03:00 in New York (EST, UTC-5) in January.
    assert next_tick("0 3 * * *", "America/New_York", at("2026-01-10T00:00")) == at("2026-01-10T08:00")


@pytest.mark.parametrize("policy, limit, grace, ticks", [
    ("once", 100, 60.0, ["00:20"]),
    ("all", 100, 60.0, ["00:05", "00:10", "00:15", "00:20"]),
    ("all", 3, 60.0, ["00:10", "00:15", "00:20"]),
    ("skip", 100, 60.0, []),  # 00:20 is 70 s late
    ("skip", 100, 70.0, ["00:20"]),
])
def test_due_ticks_by_catch_up_policy(policy: str, limit: int, grace: float, ticks: list[str]) -> None:
    got, latest, after = due_ticks("*/5 * * * *", "UTC", policy,  # type: ignore[arg-type]
                                   limit, grace, at("2026-01-01T00:05"), at("2026-01-01T00:21:10"))
    assert got == [at(f"2026-01-01T{t}") for t in ticks]
    assert (latest, after) == (at("2026-01-01T00:20"), at("2026-01-01T00:25"))


def test_due_ticks_when_now_is_exactly_a_tick() -> None:
    assert due_ticks("*/5 * * * *", "UTC", "all", 100, 60.0, at("2026-01-01T00:05"), at("2026-01-01T00:10")) == (
        [at("2026-01-01T00:05"), at("2026-01-01T00:10")], at("2026-01-01T00:10"), at("2026-01-01T00:15"))


def test_catching_up_a_year_of_minutes_costs_the_limit_not_the_downtime() -> None:
    ticks, _, _ = due_ticks("* * * * *", "UTC", "all", 10, 60.0, at("2025-01-01T00:00"), at("2026-01-01T00:00:30"))
    assert ticks == [at("2025-12-31T23:51") + dt.timedelta(minutes=i) for i in range(10)]


@pytest.mark.parametrize("kwargs", [
    {"cron": "* * *"}, {"cron": "60 * * * *"}, {"timezone": "UTC+5"}, {"catch_up": "ALL"},
    {"catch_up_limit": True}, {"misfire_grace_seconds": float("inf")}, {"name": ""},
])
def test_schedule_build_refuses_bad_arguments(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"cron": "* * * * *", "task": "t"} | kwargs
    with pytest.raises(ValidationError):
        Schedule.build(**args)  # type: ignore[arg-type]
