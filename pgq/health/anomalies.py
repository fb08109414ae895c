"""Anomalies: a worker's latest sample against its own history, and against its peers on the same queue.

- *Self*: the z-score of the latest value against the worker's earlier samples
  in the window (mean and standard deviation), per metric.
- *Peers*: a robust z-score of each worker's latest value against the workers
  serving the same queue (median and MAD, scaled by 0.6745 so that it reads
  like a z-score for normal data). A worker whose whole history is bad looks
  normal to itself; its peers show it ("4σ slower than the others").

A metric is anomalous when its z-score exceeds ``Z_THRESHOLD`` (2) in its bad
direction (latency up, throughput of health down). The spread is floored
(``REL_FLOOR`` of the reference, or the metric's absolute floor) so that a
change too small to matter -- 10.0 ms against a history of exactly 10.0 ms --
is never an anomaly. Pure functions over ``SampleSet`` arrays.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pgq.health.samples import Array, SampleSet, latest, row_quantile

#: A z-score beyond this (in the metric's bad direction) is an anomaly (SPEC §8: > 2σ).
Z_THRESHOLD = 2.0
#: Samples of its own history a worker needs before its latest one is judged against it.
MIN_HISTORY = 5
#: Workers (itself included) a queue needs before one is judged against the others.
MIN_PEERS = 3
#: The spread is at least this share of the reference value.
REL_FLOOR = 0.05
#: Makes the MAD of normal data comparable to a standard deviation.
MAD_SCALE = 0.6745

#: Metric -> (bad direction: +1 when higher is worse, absolute floor of the spread in its unit).
CHECKED: dict[str, tuple[int, float]] = {
    "error_rate": (1, 0.02),
    "latency_p50_ms": (1, 1.0),
    "latency_p95_ms": (1, 1.0),
    "claim_rtt_ms": (1, 1.0),
    "ack_rtt_ms": (1, 1.0),
    "ack_lag_ms": (1, 50.0),
    "rss_bytes": (1, 16 * 1024 * 1024),
    "loop_lag_ms": (1, 10.0),
    "stuck_handlers": (1, 1.0),
    "health_score": (-1, 0.05),
}


@dataclass(frozen=True)
class Anomaly:
    """One metric of one worker beyond ``Z_THRESHOLD``: ``against`` is 'self' or 'peers' (then ``queue``)."""

    worker_id: uuid.UUID
    metric: str
    against: str
    value: float
    reference: float  # the history's mean, or the peers' median
    z: float  # signed: positive = in the bad direction
    queue: str | None = None


def self_zscores(values: Array, counts: NDArray[np.int64], floor: float) -> tuple[Array, Array, Array]:
    """For each row: (latest value, mean of the earlier samples, z-score of the latest against them).

    The latest is the row's last sample (column ``counts - 1``); NaN z where the
    latest was not measured or fewer than ``MIN_HISTORY`` earlier ones were.
    """
    w = values.shape[0]
    if w == 0 or values.shape[1] == 0:
        empty = np.full(w, np.nan)
        return empty, empty, empty
    last_col = np.maximum(np.asarray(counts, dtype=np.int64) - 1, 0)
    x = values[np.arange(w), last_col]
    history = values.copy()
    history[np.arange(w), last_col] = np.nan
    n = np.sum(np.isfinite(history), axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows without history: NaN, judged by `n`
        mean = np.nanmean(history, axis=1)
        std = np.nanstd(history, axis=1, ddof=1)
    spread = np.maximum(np.nan_to_num(std), np.maximum(REL_FLOOR * np.abs(mean), floor))
    z = np.where((n >= MIN_HISTORY) & np.isfinite(x), (x - mean) / spread, np.nan)
    return x, mean, z


def peer_zscores(x: Array, members: NDArray[np.bool_], floor: float) -> tuple[Array, Array]:
    """Robust z-scores of ``x`` (one value per worker) within each group of ``members``
    (a (groups, workers) boolean matrix), all groups at once.

    Returns (median per group, z per group and worker), z NaN outside a group or
    for a group with fewer than ``MIN_PEERS`` measured members.
    """
    grid = np.where(members, x[None, :], np.nan)
    median, counted = row_quantile(grid, 0.5)
    mad = row_quantile(np.abs(grid - median[:, None]), 0.5)[0] / MAD_SCALE
    spread = np.maximum(np.nan_to_num(mad), np.maximum(REL_FLOOR * np.abs(median), floor))
    z = np.where(members & (counted >= MIN_PEERS)[:, None], (grid - median[:, None]) / spread[:, None], np.nan)
    return median, z


def detect(samples: SampleSet) -> list[Anomaly]:
    """Every anomaly of every worker's latest sample, against itself and against its peers."""
    return list(_detect(samples))


def _detect(samples: SampleSet) -> Iterator[Anomaly]:
    ids = samples.worker_ids
    names = sorted({q for queues in samples.queues for q in queues})
    members = np.zeros((len(names), samples.size), dtype=bool)
    index = {q: n for n, q in enumerate(names)}
    for i, queues in enumerate(samples.queues):
        for q in queues:
            members[index[q], i] = True
    for metric, (direction, floor) in CHECKED.items():
        values = samples.metrics[metric]
        x, mean, z = self_zscores(values, samples.counts, floor)
        for i in np.nonzero(direction * np.nan_to_num(z) > Z_THRESHOLD)[0].tolist():
            yield Anomaly(ids[i], metric, "self", float(x[i]), float(mean[i]), float(direction * z[i]))
        if not names:
            continue
        current = latest(values) if values.size else np.full(samples.size, np.nan)
        median, pz = peer_zscores(current, members, floor)
        for g, i in zip(*np.nonzero(direction * np.nan_to_num(pz) > Z_THRESHOLD), strict=True):
            yield Anomaly(ids[i], metric, "peers", float(current[i]), float(median[g]), float(direction * pz[g, i]),
                          names[g])
