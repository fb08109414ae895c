"""Failure prediction: the trend of each worker's health score, and of its memory, by linear regression.

``fit_lines`` is ``scipy.stats.linregress`` for every row of a (W, T) array
at once (NaN = no sample), with the same slope, intercept, r, p-value and
standard error (a test checks them against linregress row by row). From the
score's line, ``predict_failures`` says when it crosses ``FAILING`` (0.3), the
95 % interval of that time (where the line's confidence band meets 0.3), and the
probability that the line is below 0.3 at the end of the horizon (from the
standard error of the fitted line there, Student's t). It predicts nothing
for a flat or improving series, nor for a decline that is not significant
(one-sided p >= ``MAX_P_VALUE``) or that would take longer than the horizon:
a healthy fleet raises no prediction. ``predict_memory`` does the same for an
RSS rising towards ``PGQ_HEALTH_RSS_LIMIT_BYTES``.
"""

from __future__ import annotations

import dataclasses
import uuid
import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from pgq.health.samples import Array, SampleSet
from pgq.health.score import FAILING

#: Fewest samples a line is fitted to (with fewer, nothing is predicted).
MIN_POINTS = 6
#: A decline must be significant at this level (one-sided) to be predicted.
MAX_P_VALUE = 0.01
#: Default horizon (seconds): crossings further ahead are not reported.
HORIZON_SECONDS = 3600.0


@dataclass(frozen=True)
class Lines:
    """One fitted line per row: y = intercept + slope * t (t in seconds, 0 = now)."""

    slope: Array
    intercept: Array
    r: Array
    p_value: Array  # two-sided, for slope != 0 (as linregress)
    stderr: Array  # of the slope
    n: NDArray[np.int64]
    t_mean: Array
    sxx: Array
    residual_std: Array


@dataclass(frozen=True)
class Prediction:
    """A worker predicted to cross a threshold: in ``seconds`` (from now; 0 = already past it),
    within ``[earliest, latest]`` (95 %, Fieller; latest may be inf), with ``probability`` of being
    past it at the end of the horizon, from a fit with ``r_squared`` and ``p_value`` (one-sided)."""

    worker_id: uuid.UUID
    what: str  # "health_score" (reaches FAILING) or "rss_bytes" (reaches the limit)
    seconds: float
    earliest: float
    latest: float
    probability: float
    slope_per_hour: float
    r_squared: float
    p_value: float
    samples: int


def fit_lines(t: Array, y: Array) -> Lines:
    """Least-squares lines through each row's points where both ``t`` and ``y`` are finite."""
    mask = np.isfinite(t) & np.isfinite(y)
    n = mask.sum(axis=1)
    tz, yz = np.where(mask, t, 0.0), np.where(mask, y, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_mean = tz.sum(axis=1) / n
        y_mean = yz.sum(axis=1) / n
        dt = np.where(mask, t - t_mean[:, None], 0.0)
        dy = np.where(mask, y - y_mean[:, None], 0.0)
        sxx, sxy, syy = (dt * dt).sum(axis=1), (dt * dy).sum(axis=1), (dy * dy).sum(axis=1)
        slope = sxy / sxx
        intercept = y_mean - slope * t_mean
        r = np.where(syy > 0, sxy / np.sqrt(sxx * syy), 0.0)
        df = n - 2
        residual = np.maximum(syy - slope * sxy, 0.0)
        residual_std = np.sqrt(residual / df)
        stderr = residual_std / np.sqrt(sxx)
        t_stat = slope / stderr
        p_value = np.where(stderr > 0, 2 * stats.t.sf(np.abs(t_stat), np.maximum(df, 1)),
                           np.where(slope != 0, 0.0, 1.0))
    return Lines(slope, intercept, r, p_value, stderr, n.astype(np.int64), t_mean, sxx, residual_std)


def _crossing(lines: Lines, level: float | Array, sign: int, horizon: float,
              ids: list[uuid.UUID], what: str) -> list[Prediction]:
    """Rows whose line heads (``sign`` -1: down, +1: up) significantly to ``level`` within ``horizon``."""
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        one_sided = np.where(sign * lines.slope > 0, lines.p_value / 2, 1.0)
        gap = level - lines.intercept  # how far the line is from the level now (t = 0)
        seconds = np.where(sign * gap <= 0, 0.0, gap / lines.slope)
        chosen = np.nonzero((lines.n >= MIN_POINTS) & (one_sided < MAX_P_VALUE) & (seconds <= horizon)
                            & np.isfinite(seconds))[0]
        # The rest only for the rows chosen (a healthy fleet has none: the t quantiles are the cost).
        lines = Lines(*(getattr(lines, f.name)[chosen] for f in dataclasses.fields(Lines)))
        df = np.maximum(lines.n - 2, 1)
        earliest, latest = _interval(lines, level, df)
        at_horizon = lines.intercept + lines.slope * horizon
        se = lines.residual_std * np.sqrt(1 / lines.n + (horizon - lines.t_mean) ** 2 / lines.sxx)
        beyond = sign * (at_horizon - level)
        probability = np.where(se > 0, stats.t.cdf(beyond / se, df), (beyond >= 0).astype(float))
    return [Prediction(ids[i], what, float(seconds[i]), float(max(earliest[k], 0.0)), float(latest[k]),
                       float(probability[k]), float(lines.slope[k] * 3600), float(lines.r[k] ** 2),
                       float(one_sided[i]), int(lines.n[k]))
            for k, i in enumerate(chosen.tolist())]


def _interval(lines: Lines, level: float | Array, df: NDArray[np.int64]) -> tuple[Array, Array]:
    """The 95 % interval of the time the line reaches ``level`` (Fieller's inverse prediction).

    The times t at which ``level`` lies within the 95 % confidence band of the
    fitted line: (a + b t - L)^2 = q (1/n + (t - tm)^2 / Sxx), q = tcrit^2 s^2, a
    quadratic in t. When the slope is not clearly non-zero (A <= 0) the band
    never closes: the interval is [0, inf).
    """
    q = stats.t.ppf(0.975, df) ** 2 * lines.residual_std ** 2
    a, b, tm, sxx = lines.intercept - level, lines.slope, lines.t_mean, lines.sxx
    qa = b * b - q / sxx
    qb = 2 * (b * a + q * tm / sxx)
    qc = a * a - q * (1 / lines.n + tm * tm / sxx)
    disc = qb * qb - 4 * qa * qc
    ok = (qa > 0) & (disc >= 0)
    root = np.sqrt(np.where(ok, disc, 0.0))
    low = np.where(ok, (-qb - root) / (2 * qa), 0.0)
    high = np.where(ok, (-qb + root) / (2 * qa), np.inf)
    return np.maximum(low, 0.0), np.maximum(high, 0.0)


def predict_failures(samples: SampleSet, horizon: float = HORIZON_SECONDS) -> list[Prediction]:
    """Workers whose health score is declining significantly towards ``FAILING`` within ``horizon`` s."""
    lines = fit_lines(samples.t, samples.metrics["health_score"])
    return _crossing(lines, FAILING, -1, horizon, samples.worker_ids, "health_score")


def predict_memory(samples: SampleSet, limit_bytes: int, horizon: float = HORIZON_SECONDS) -> list[Prediction]:
    """Workers whose RSS rises significantly to ``limit_bytes`` within ``horizon`` s (none without a limit)."""
    if limit_bytes <= 0:
        return []
    lines = fit_lines(samples.t, samples.metrics["rss_bytes"])
    return _crossing(lines, float(limit_bytes), 1, horizon, samples.worker_ids, "rss_bytes")
