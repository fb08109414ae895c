"""Failure prediction (pgq.health.prediction) on synthetic series with a known crossing time.

The documented bound (docs/health.md): for a score declining linearly with
noise of sd 0.02 sampled every 30 s over the last hour, the predicted time to
cross 0.3 is within 10 % of the true one, and the true one lies in the 95 %
interval in at least 90 % of the series. A flat healthy series predicts nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pgq.health.prediction import fit_lines, predict_failures, predict_memory
from pgq.health.samples import SampleSet

N = 120
STEP = 30.0
T = np.arange(-N + 1, 1, dtype=float) * STEP  # the last hour, now = 0


def declining(rng: np.random.Generator, now_score: float, per_hour: float, noise: float = 0.02) -> np.ndarray:
    return np.clip(now_score + per_hour * T / 3600 + rng.normal(0, noise, N), 0, 1)


def test_fit_lines_is_linregress_row_by_row() -> None:
    rng = np.random.default_rng(7)
    y = rng.normal(0, 1, (6, N)) + np.linspace(0, 3, N) * rng.normal(0, 1, (6, 1))
    t = np.tile(T, (6, 1))
    y[2, ::3] = np.nan  # missing samples
    lines = fit_lines(t, y)
    for i in range(6):
        ok = np.isfinite(y[i])
        ref = stats.linregress(t[i][ok], y[i][ok])
        assert lines.slope[i] == pytest.approx(ref.slope)
        assert lines.intercept[i] == pytest.approx(ref.intercept)
        assert lines.r[i] == pytest.approx(ref.rvalue)
        assert lines.p_value[i] == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-300)
        assert lines.stderr[i] == pytest.approx(ref.stderr)


def test_a_known_crossing_is_predicted_within_the_documented_bound() -> None:
    rng = np.random.default_rng(11)
    # Now at 0.6, losing 0.4 per hour: crosses 0.3 in 0.3 / 0.4 h = 2,700 s.
    truth = 0.3 / 0.4 * 3600
    rows = np.array([declining(rng, 0.6, -0.4) for _ in range(40)])
    predictions = predict_failures(SampleSet.from_arrays(np.tile(T, (40, 1)), {"health_score": rows}),
                                   horizon=4 * 3600)
    assert len(predictions) == 40
    errors = [abs(p.seconds - truth) / truth for p in predictions]
    assert max(errors) < 0.10
    covered = sum(p.earliest <= truth <= p.latest for p in predictions)
    assert covered >= 36
    assert all(p.slope_per_hour == pytest.approx(-0.4, abs=0.05) and p.r_squared > 0.9 for p in predictions)


def test_the_probability_says_whether_the_crossing_falls_within_the_horizon() -> None:
    rng = np.random.default_rng(3)
    rows = np.array([declining(rng, 0.6, -0.4)])  # crosses at ~2,700 s
    samples = SampleSet.from_arrays(T[None, :], {"health_score": rows})
    [soon] = predict_failures(samples, horizon=3600)
    assert soon.probability > 0.99  # at 1 h the line is at ~0.2, well below 0.3
    assert predict_failures(samples, horizon=1800) == []  # not within half an hour


def test_a_flat_healthy_fleet_predicts_nothing() -> None:
    rng = np.random.default_rng(5)
    flat = np.clip(1 - np.abs(rng.normal(0, 0.03, (500, N))), 0, 1)
    exact = np.ones((3, N))
    improving = np.array([declining(rng, 0.9, +0.3)])
    rows = np.vstack([flat, exact, improving])
    samples = SampleSet.from_arrays(np.tile(T, (rows.shape[0], 1)), {"health_score": rows})
    assert predict_failures(samples) == []


def test_a_worker_already_failing_and_declining_is_due_now() -> None:
    rng = np.random.default_rng(9)
    rows = np.array([declining(rng, 0.2, -0.5)])
    [p] = predict_failures(SampleSet.from_arrays(T[None, :], {"health_score": rows}))
    assert p.seconds == 0.0 and p.probability > 0.99


def test_too_few_samples_predict_nothing() -> None:
    t = T[-5:][None, :]
    assert predict_failures(SampleSet.from_arrays(t, {"health_score": np.array([[0.9, 0.8, 0.7, 0.6, 0.5]])})) == []


def test_rss_rising_to_the_limit_is_predicted() -> None:
    rng = np.random.default_rng(2)
    mb = 1024 * 1024
    # 400 MB now, +200 MB per hour, limit 600 MB: reached in one hour.
    rss = 400 * mb + 200 * mb * T / 3600 + rng.normal(0, 2 * mb, N)
    samples = SampleSet.from_arrays(T[None, :], {"rss_bytes": rss[None, :]})
    [p] = predict_memory(samples, 600 * mb, horizon=2 * 3600)
    assert p.what == "rss_bytes" and abs(p.seconds - 3600) / 3600 < 0.10
    assert predict_memory(samples, 0) == []  # no limit set
    steady = SampleSet.from_arrays(T[None, :], {"rss_bytes": (400 * mb + rng.normal(0, 2 * mb, N))[None, :]})
    assert predict_memory(steady, 600 * mb) == []
