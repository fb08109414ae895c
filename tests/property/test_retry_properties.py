"""Properties of pgq.Backoff, and a cross-check of its formula against the
database's pgq.retry_delay (the database applies the backoff when it records a
failed attempt, so both must agree)."""

from __future__ import annotations

import math
import random
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgq.errors import MAX_DELAY_SECONDS
from pgq.retry import Backoff

FAST = settings(max_examples=300, deadline=None, database=None)


@st.composite
def backoffs(draw: st.DrawFn) -> Backoff:
    base = draw(st.floats(min_value=1e-3, max_value=1e4, allow_nan=False, allow_infinity=False))
    factor = draw(st.one_of(st.just(1.0), st.floats(min_value=1.0, max_value=20.0)))
    ratio = draw(st.one_of(st.just(1.0), st.floats(min_value=1.0, max_value=1e6)))
    jitter = draw(st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=0.99)))
    return Backoff(base=base, factor=factor, max=min(base * ratio, MAX_DELAY_SECONDS), jitter=jitter)


attempts = st.integers(min_value=1, max_value=2**31 - 2)


@FAST
@given(backoff=backoffs(), attempt=st.integers(min_value=1, max_value=500))
def test_base_delay_is_non_decreasing_in_attempt(backoff: Backoff, attempt: int) -> None:
    assert backoff.base_delay(attempt) <= backoff.base_delay(attempt + 1)


@FAST
@given(backoff=backoffs(), attempt=attempts)
def test_base_delay_is_between_base_and_max(backoff: Backoff, attempt: int) -> None:
    delay = backoff.base_delay(attempt)
    assert math.isfinite(delay)
    assert backoff.base <= delay <= backoff.max
    assert backoff.base_delay(1) == backoff.base


@FAST
@given(backoff=backoffs())
def test_base_delay_reaches_the_cap(backoff: Backoff) -> None:
    if backoff.factor > 1:
        # Enough doublings to exceed max/base, whatever the factor: the cap is reached.
        needed = math.ceil(math.log(backoff.max / backoff.base) / math.log(backoff.factor)) + 1
        assert backoff.base_delay(needed) == backoff.max
        if needed <= 2**31 - 2:  # a factor of 1 + 1e-16 needs ~1e16 attempts to get there
            assert backoff.base_delay(2**31 - 2) == backoff.max
    else:
        assert backoff.base_delay(2**31 - 2) == backoff.base


@FAST
@given(backoff=backoffs(), attempt=st.integers(min_value=1, max_value=10_000), seed=st.integers(0, 2**32))
def test_jittered_delay_stays_within_the_band(backoff: Backoff, attempt: int, seed: int) -> None:
    base = backoff.base_delay(attempt)
    rng = random.Random(seed)
    for _ in range(20):
        delay = backoff.delay(attempt, rng)
        assert base * (1 - backoff.jitter) <= delay <= base * (1 + backoff.jitter)
        assert delay > 0


# ---------------------------------------------------------------- against Postgres


@pytest.mark.integration
@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(backoff=backoffs(), attempt=attempts)
def test_python_base_delay_equals_sql_retry_delay(conn: psycopg.Connection[Any], backoff: Backoff,
                                                  attempt: int) -> None:
    # The connection is reused across examples: retry_delay is IMMUTABLE and stateless.
    row = conn.execute(
        "SELECT pgq.retry_delay(%s::int, %s::float8, %s::float8, %s::float8)",
        (attempt, backoff.base, backoff.factor, backoff.max),
    ).fetchone()
    assert row is not None
    assert math.isclose(row[0], backoff.base_delay(attempt), rel_tol=1e-12), (row[0], backoff.base_delay(attempt))


@pytest.mark.integration
def test_sql_retry_delay_defaults_are_the_python_defaults(conn: psycopg.Connection[Any]) -> None:
    default = Backoff()
    for attempt in (1, 2, 5, 9, 10, 50, 2**31 - 1):
        row = conn.execute("SELECT pgq.retry_delay(%s::int)", (attempt,)).fetchone()
        assert row is not None
        assert row[0] == pytest.approx(default.base_delay(attempt), rel=1e-12)
