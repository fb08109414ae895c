"""The health score: a number from 0 to 1 per health sample; below ``FAILING`` (0.3) a worker is failing.

A pure, vectorised function of a sample's metrics (numpy arrays or scalars,
NaN or None = not measured). Each *component* estimates the share of a
healthy worker's useful capacity that survives one kind of trouble; the
score is their product (independent losses multiply), and each component is
calibrated so that it alone, at its *critical* level, puts the worker at
``FAILING``. docs/health.md explains and defends the choices; the constants
below are the whole formula.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

# The thresholds live in the package (no numpy needed to read them); re-exported here.
from pgq.health import DEGRADED as DEGRADED
from pgq.health import FAILING as FAILING

Array = NDArray[np.float64]

#: Pseudo-successes added to the attempts of a sample: a worker with one failure out of
#: one job is not called 100 % failing; with PRIOR = 3, 3 failures out of 3 reach FAILING.
ERROR_PRIOR = 3.0
#: errors = 1 - ERROR_SLOPE * rate: half the attempts failing is critical (0.3).
ERROR_SLOPE = 1.4
#: speed = min(1, SLOWDOWN_TOLERANCE * baseline / p50): twice as slow is tolerated (the
#: alert rule's "duration > 2x baseline"), ~6.7x is critical.
SLOWDOWN_TOLERANCE = 2.0
#: outcome flow = 1 / (1 + max(0, ack lag - ACK_LAG_FREE) / ACK_LAG_HALF): seconds.
ACK_LAG_FREE = 1.0
ACK_LAG_HALF = 2.0
#: loop = 1 / (1 + max(0, loop lag - LOOP_LAG_FREE) / LOOP_LAG_HALF): seconds.
LOOP_LAG_FREE = 0.1
LOOP_LAG_HALF = 0.25
#: memory = 1 up to MEMORY_FREE of the limit, then linear to 0 at the limit (0.94 is critical).
MEMORY_FREE = 0.8

COMPONENTS = ("errors", "speed", "capacity", "flow", "loop", "memory")


def _arr(value: ArrayLike | None) -> Array:
    """As a float array; None becomes NaN (not measured)."""
    if value is None:
        return np.array(np.nan)
    return np.asarray(value, dtype=np.float64)


def components(*, completed: ArrayLike | None = None, failed: ArrayLike | None = None,
               latency_p50_ms: ArrayLike | None = None, baseline_p50_ms: ArrayLike | None = None,
               stuck_handlers: ArrayLike | None = None, capacity: ArrayLike | None = None,
               ack_lag_ms: ArrayLike | None = None, loop_lag_ms: ArrayLike | None = None,
               rss_bytes: ArrayLike | None = None, rss_limit_bytes: ArrayLike | None = None) -> dict[str, Array]:
    """Each component of the score, from 0 to 1 (1 where its inputs are not measured).

    Arguments broadcast together (numpy rules); NaN or None means not measured.
    ``baseline_p50_ms`` is the worker's normal median run time (see
    ``latency_baseline``); ``rss_limit_bytes`` 0 or NaN means no memory limit.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        done, bad = np.nan_to_num(_arr(completed)), np.nan_to_num(_arr(failed))
        rate = bad / (done + bad + ERROR_PRIOR)
        errors = np.clip(1 - ERROR_SLOPE * rate, 0, 1)
        p50, base = _arr(latency_p50_ms), _arr(baseline_p50_ms)
        speed = np.where((p50 > 0) & (base > 0), np.minimum(1, SLOWDOWN_TOLERANCE * base / p50), 1.0)
        stuck, cap = _arr(stuck_handlers), _arr(capacity)
        slots = np.where((cap > 0) & (stuck >= 0), np.clip(1 - stuck / cap, 0, 1), 1.0)
        ack = np.nan_to_num(_arr(ack_lag_ms)) / 1000
        flow = 1 / (1 + np.maximum(0, ack - ACK_LAG_FREE) / ACK_LAG_HALF)
        lag = np.nan_to_num(_arr(loop_lag_ms)) / 1000
        loop = 1 / (1 + np.maximum(0, lag - LOOP_LAG_FREE) / LOOP_LAG_HALF)
        used = _arr(rss_bytes) / _arr(rss_limit_bytes)
        memory = np.where(np.isfinite(used) & (used > MEMORY_FREE),
                          np.clip((1 - used) / (1 - MEMORY_FREE), 0, 1), 1.0)
    shape = np.broadcast_shapes(*(np.shape(a) for a in (errors, speed, slots, flow, loop, memory)))
    return {name: np.broadcast_to(np.asarray(value, dtype=np.float64), shape)
            for name, value in zip(COMPONENTS, (errors, speed, slots, flow, loop, memory), strict=True)}


def health_score(**metrics: Any) -> Array:
    """The health score (0 to 1, rounded to 4 places): the product of ``components(**metrics)``."""
    parts = components(**metrics)
    product: Array = np.ones(np.shape(parts["errors"]), dtype=np.float64)
    for value in parts.values():
        product = product * value
    return np.asarray(np.round(np.clip(product, 0.0, 1.0), 4), dtype=np.float64)


def latency_baseline(p50_history_ms: ArrayLike, axis: int = -1) -> Array:
    """A worker's normal median run time: the 25th percentile of its recent samples' p50.

    A low quantile rather than the mean, so that a worker slowing down keeps its
    healthy baseline until three quarters of the window are slow. NaN (not
    measured) samples are ignored; fewer than 3 measured gives NaN (no baseline:
    the speed component stays 1).
    """
    from pgq.health.samples import row_quantile

    history = _arr(p50_history_ms)
    if history.size == 0:
        return np.asarray(np.nan)
    base, counted = row_quantile(np.moveaxis(history, axis, -1), 0.25)
    return np.where(counted >= 3, base, np.nan)


def score_sample(sample: Mapping[str, Any], baseline_p50_ms: float | None,
                 rss_limit_bytes: float | None) -> float:
    """The score of one sample (``heartbeat_worker_v3``'s keys), as a float."""
    return float(health_score(
        completed=sample.get("jobs_completed"), failed=sample.get("jobs_failed"),
        latency_p50_ms=sample.get("latency_p50_ms"), baseline_p50_ms=baseline_p50_ms,
        stuck_handlers=sample.get("stuck_handlers"), capacity=sample.get("capacity"),
        ack_lag_ms=sample.get("ack_lag_ms"), loop_lag_ms=sample.get("loop_lag_ms"),
        rss_bytes=sample.get("rss_bytes"), rss_limit_bytes=rss_limit_bytes or None))
