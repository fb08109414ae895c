"""pgq.retry_delay: min(base * factor^(attempt - 1), max) seconds, without jitter (SPEC §4)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def conn(module_conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    # retry_delay is a pure function: one database serves the whole module.
    return module_conn


def retry_delay(conn: psycopg.Connection[Any], attempt: int, base: float | None = None,
                factor: float | None = None, cap: float | None = None) -> float:
    row = conn.execute("SELECT pgq.retry_delay(%s, %s::float8, %s::float8, %s::float8)",
                       (attempt, base, factor, cap)).fetchone()
    assert row is not None
    return float(row[0])


# Expected values are written out from the formula by hand, not computed by pgq.
@pytest.mark.parametrize(("attempt", "expected"), [
    (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (8, 128.0), (9, 256.0), (10, 300.0), (11, 300.0),
])
def test_default_policy_doubles_from_one_second_up_to_five_minutes(conn, attempt, expected):
    assert retry_delay(conn, attempt) == pytest.approx(expected)


@pytest.mark.parametrize(("attempt", "base", "factor", "cap", "expected"), [
    (1, 5.0, 3.0, 100.0, 5.0),
    (2, 5.0, 3.0, 100.0, 15.0),
    (3, 5.0, 3.0, 100.0, 45.0),
    (4, 5.0, 3.0, 100.0, 100.0),
    (5, 0.5, 1.0, 10.0, 0.5),      # factor 1: constant
    (3, 0.25, 2.0, None, 1.0),     # default cap 300
    (3, 20.0, 2.0, 10.0, 20.0),    # a cap below the base is raised to the base
])
def test_custom_policies(conn, attempt, base, factor, cap, expected):
    assert retry_delay(conn, attempt, base, factor, cap) == pytest.approx(expected)


def test_huge_attempt_numbers_cap_instead_of_overflowing(conn):
    assert retry_delay(conn, 2_000_000_000, 1.0, 10.0, 60.0) == pytest.approx(60.0)


@pytest.mark.parametrize("attempt", [0, -3])
def test_attempts_below_one_count_as_the_first(conn, attempt):
    assert retry_delay(conn, attempt) == pytest.approx(1.0)


def test_delays_never_decrease_and_never_exceed_the_cap(conn):
    delays = [retry_delay(conn, n, 0.3, 1.7, 45.0) for n in range(1, 30)]
    assert delays == sorted(delays)
    assert max(delays) == pytest.approx(45.0)
