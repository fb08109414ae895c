"""The health score (pgq.health.score): each component at the levels docs/health.md names, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from pgq.health.score import FAILING, components, health_score, latency_baseline, score_sample


def test_a_sample_with_nothing_measured_is_healthy() -> None:
    assert float(health_score()) == 1.0
    assert all(float(v) == 1.0 for v in components().values())


@pytest.mark.parametrize(("completed", "failed", "expected"), [
    (0, 0, 1.0),
    (897, 100, 0.86),      # 10 % of 1,000 attempts (with the 3 pseudo-successes): the alert level
    (0, 3, 0.3),           # 3 failures out of 3: 3 / 6 = half -> critical
    (0, 1, 1 - 1.4 / 4),   # one failure out of one is not 100 % failing
    (0, 100, 0.0),
])
def test_errors_cost_in_proportion_to_the_failed_share(completed: int, failed: int, expected: float) -> None:
    assert float(components(completed=completed, failed=failed)["errors"]) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(("p50", "expected"), [(10, 1.0), (20, 1.0), (40, 0.5), (200 / 3, 0.3), (None, 1.0)])
def test_speed_tolerates_twice_the_baseline_then_divides(p50: float | None, expected: float) -> None:
    assert float(components(latency_p50_ms=p50, baseline_p50_ms=10)["speed"]) == pytest.approx(expected)
    assert float(components(latency_p50_ms=p50, baseline_p50_ms=None)["speed"]) == 1.0  # no baseline yet


@pytest.mark.parametrize(("name", "metrics", "expected"), [
    ("capacity", {"stuck_handlers": 2, "capacity": 8}, 0.75),
    ("capacity", {"stuck_handlers": 8, "capacity": 8}, 0.0),
    ("flow", {"ack_lag_ms": 500}, 1.0),
    ("flow", {"ack_lag_ms": 3000}, 0.5),
    ("loop", {"loop_lag_ms": 80}, 1.0),
    ("loop", {"loop_lag_ms": 350}, 0.5),
    ("memory", {"rss_bytes": 500, "rss_limit_bytes": 1000}, 1.0),
    ("memory", {"rss_bytes": 940, "rss_limit_bytes": 1000}, 0.3),
    ("memory", {"rss_bytes": 1200, "rss_limit_bytes": 1000}, 0.0),
    ("memory", {"rss_bytes": 10**12, "rss_limit_bytes": None}, 1.0),
    ("memory", {"rss_bytes": 10**12, "rss_limit_bytes": 0}, 1.0),
])
def test_each_component_at_its_documented_levels(name: str, metrics: dict[str, float], expected: float) -> None:
    assert float(components(**metrics)[name]) == pytest.approx(expected)


def test_the_score_is_the_product_and_a_single_critical_component_is_failing() -> None:
    # 10 % errors (0.86) and 4x slower (0.5): 0.43.
    assert float(health_score(completed=897, failed=100, latency_p50_ms=40, baseline_p50_ms=10)) == 0.43
    assert float(health_score(ack_lag_ms=1000 + 2000 * (1 / 0.3 - 1))) == pytest.approx(FAILING, abs=1e-4)
    assert float(health_score(completed=0, failed=3)) <= FAILING


def test_scores_are_vectorised_with_broadcasting() -> None:
    p50 = np.array([[10.0, 40.0, np.nan], [20.0, 80.0, 5.0]])
    baseline = np.array([[10.0], [20.0]])
    scores = health_score(latency_p50_ms=p50, baseline_p50_ms=baseline, failed=np.zeros((2, 3)))
    assert scores.shape == (2, 3)
    assert scores.tolist() == [[1.0, 0.5, 1.0], [1.0, 0.5, 1.0]]


def test_the_latency_baseline_is_the_lower_quartile_of_measured_history() -> None:
    assert float(latency_baseline([10, 20, 30, 40])) == pytest.approx(17.5)
    assert float(latency_baseline([10, np.nan, 30, 40, np.nan])) == pytest.approx(20)
    assert np.isnan(latency_baseline([10, np.nan, 30]))  # fewer than 3 measured
    assert np.isnan(latency_baseline([]))
    rows = latency_baseline(np.array([[1.0, 2, 3, 4, 5], [np.nan] * 5]), axis=1)
    assert rows[0] == 2 and np.isnan(rows[1])


def test_score_sample_reads_the_heartbeat_keys() -> None:
    sample = {"jobs_completed": 18, "jobs_failed": 2, "latency_p50_ms": 30.0, "stuck_handlers": 0, "capacity": 4}
    assert score_sample(sample, 10.0, None) == pytest.approx(round((1 - 1.4 * 2 / 23) * (2 / 3), 4))
