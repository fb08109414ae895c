"""pgq.Backoff: validation, the delay formula, jitter bounds."""

from __future__ import annotations

import math
import random

import pytest

import pgq
from pgq.retry import DEFAULT_BACKOFF, Backoff


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"base": 0}, "Backoff.base"),
        ({"base": -1}, "Backoff.base"),
        ({"base": math.nan}, "Backoff.base"),
        ({"base": math.inf}, "Backoff.base"),
        ({"base": True}, "Backoff.base"),
        ({"base": "1"}, "Backoff.base"),
        ({"factor": 0.5}, "Backoff.factor"),
        ({"factor": 0}, "Backoff.factor"),
        ({"factor": math.nan}, "Backoff.factor"),
        ({"max": 0.5, "base": 1}, "Backoff.max"),
        ({"max": math.inf}, "Backoff.max"),
        ({"max": None}, "Backoff.max"),
        ({"jitter": -0.01}, "Backoff.jitter"),
        ({"jitter": 1}, "Backoff.jitter"),
        ({"jitter": 1.5}, "Backoff.jitter"),
        ({"jitter": False}, "Backoff.jitter"),
    ],
)
def test_invalid_backoff_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(pgq.ValidationError, match=field):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_boundary_values_are_valid() -> None:
    b = Backoff(base=5, factor=1, max=5, jitter=0)
    assert (b.base, b.factor, b.max, b.jitter) == (5, 1, 5, 0)
    assert Backoff(jitter=0.999).jitter == 0.999


def test_default_backoff_matches_the_database_defaults() -> None:
    # pgq.retry_delay and the jobs.retry_* column comments: 1 s, x2, 300 s, 10 %.
    assert (DEFAULT_BACKOFF.base, DEFAULT_BACKOFF.factor, DEFAULT_BACKOFF.max, DEFAULT_BACKOFF.jitter) == (
        1.0, 2.0, 300.0, 0.1,
    )


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        (Backoff(base=1, factor=2, max=60), [1, 2, 4, 8, 16, 32, 60, 60, 60]),
        (Backoff(base=0.5, factor=3, max=100), [0.5, 1.5, 4.5, 13.5, 40.5, 100, 100]),
        (Backoff(base=10, factor=1, max=1000), [10, 10, 10, 10]),
        (Backoff(base=7, factor=10, max=7), [7, 7, 7]),
        (Backoff(base=2, factor=2, max=16), [2, 4, 8, 16, 16]),
        (Backoff(), [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]),
    ],
)
def test_base_delay_hand_computed(backoff: Backoff, expected: list[float]) -> None:
    actual = [backoff.base_delay(n) for n in range(1, len(expected) + 1)]
    assert actual == pytest.approx(expected, rel=1e-12)
    assert all(isinstance(d, float) for d in actual)


def test_base_delay_caps_huge_attempts_without_overflow() -> None:
    b = Backoff(base=1, factor=10, max=3600)
    assert b.base_delay(10_000) == 3600.0
    assert b.base_delay(2**31 - 1) == 3600.0
    assert Backoff(base=1, factor=1, max=5).base_delay(10**9) == 1.0


@pytest.mark.parametrize("attempt", [0, -1, True, 1.0, "2", None])
def test_base_delay_rejects_bad_attempt(attempt: object) -> None:
    with pytest.raises(pgq.ValidationError, match="attempt"):
        Backoff().base_delay(attempt)  # type: ignore[arg-type]


def test_delay_without_jitter_is_the_base_delay() -> None:
    b = Backoff(base=3, factor=2, max=100, jitter=0)
    rng = random.Random(1)
    assert [b.delay(n, rng) for n in range(1, 6)] == [3, 6, 12, 24, 48]


@pytest.mark.parametrize("attempt", [1, 3, 12])
def test_jitter_stays_within_bounds_and_spreads_over_them(attempt: int) -> None:
    b = Backoff(base=2, factor=2, max=1000, jitter=0.25)
    base = b.base_delay(attempt)
    rng = random.Random(12345)
    draws = [b.delay(attempt, rng) for _ in range(2000)]
    low, high = base * 0.75, base * 1.25
    assert all(low <= d <= high for d in draws)
    # The noise really is +/- 25 %: both halves of the band are used, close to its edges.
    assert min(draws) < base * 0.76
    assert max(draws) > base * 1.24
    assert any(d < base for d in draws) and any(d > base for d in draws)


def test_delay_is_reproducible_with_a_seeded_rng() -> None:
    b = Backoff(jitter=0.5)
    assert [b.delay(4, random.Random(7)) for _ in range(3)] == [b.delay(4, random.Random(7))] * 3


def test_delay_uses_the_module_random_when_no_rng_is_given() -> None:
    b = Backoff(base=10, factor=1, max=10, jitter=0.1)
    draws = {b.delay(1) for _ in range(50)}
    assert len(draws) > 1
    assert all(9.0 <= d <= 11.0 for d in draws)


def test_backoff_is_a_frozen_value() -> None:
    assert Backoff(1, 2, 60, 0.1) == Backoff(base=1, factor=2, max=60, jitter=0.1)
    assert hash(Backoff()) == hash(Backoff())
    with pytest.raises(AttributeError):
        Backoff().base = 5  # type: ignore[misc]
