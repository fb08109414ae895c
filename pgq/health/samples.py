"""Health samples as arrays: one row per worker, one column per sample, NaN where nothing was measured.

``SampleSet`` is what the analysis (``anomalies``, ``prediction``) reads;
``SampleSet.from_rows`` builds it from rows in (worker, time) order, as
``HealthQueries.recent_samples`` returns them. Nothing here connects to
anything.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pgq.health import METRICS

Array = NDArray[np.float64]

__all__ = ["METRICS", "Array", "SampleSet", "latest"]


@dataclass(frozen=True)
class SampleSet:
    """The samples of ``W`` workers, padded to ``T`` columns (oldest first; padding at the end is NaN).

    ``t`` holds each sample's time in seconds since ``epoch`` (the database time
    the samples were read at: ``t`` is <= 0), ``metrics`` one (W, T) array per
    name of ``METRICS``, ``counts`` the number of real samples per worker.
    """

    worker_ids: list[uuid.UUID]
    queues: list[tuple[str, ...]]
    t: Array
    metrics: dict[str, Array]
    counts: NDArray[np.int64]

    @property
    def size(self) -> int:
        return len(self.worker_ids)

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[Any]]) -> SampleSet:
        """Build from rows ``(worker_id, queues, age_seconds, *METRICS)`` ordered by worker, then time.

        ``age_seconds`` is how long before the read the sample was logged (>= 0).
        """
        if not rows:
            empty = np.zeros((0, 0))
            return cls([], [], empty, {m: empty for m in METRICS}, np.zeros(0, dtype=np.int64))
        ids = [r[0] for r in rows]
        # Where each worker's run of rows starts (rows are grouped by worker).
        starts = [0] + [i for i in range(1, len(ids)) if ids[i] != ids[i - 1]]
        counts: NDArray[np.int64] = np.diff(np.array([*starts, len(ids)], dtype=np.int64)).astype(np.int64)
        width = int(counts.max())
        row_of = np.repeat(np.arange(len(starts)), counts)
        col_of = np.arange(len(ids)) - np.repeat(np.array(starts, dtype=np.int64), counts)
        data = np.array([[np.nan if v is None else float(v) for v in r[2:]] for r in rows], dtype=np.float64)
        grids = np.full((data.shape[1], len(starts), width), np.nan)
        grids[:, row_of, col_of] = data.T
        return cls([ids[s] for s in starts], [tuple(rows[s][1]) for s in starts], -grids[0],
                   dict(zip(METRICS, grids[1:], strict=True)), counts)

    @classmethod
    def from_arrays(cls, t: Array, metrics: dict[str, Array], *, worker_ids: Sequence[uuid.UUID] | None = None,
                    queues: Sequence[tuple[str, ...]] | None = None) -> SampleSet:
        """Build from (W, T) arrays (synthetic series in tests and the bench); missing metrics are NaN."""
        t = np.asarray(t, dtype=np.float64)
        w = t.shape[0]
        full = {m: np.asarray(metrics[m], dtype=np.float64) if m in metrics else np.full(t.shape, np.nan)
                for m in METRICS}
        unknown = set(metrics) - set(METRICS)
        if unknown:
            raise ValueError(f"unknown metrics: {sorted(unknown)}")
        ids = list(worker_ids) if worker_ids is not None else [uuid.UUID(int=i + 1) for i in range(w)]
        return cls(ids, list(queues) if queues is not None else [("default",)] * w, t, full,
                   np.sum(np.isfinite(t), axis=1).astype(np.int64))


def row_quantile(values: Array, q: float) -> tuple[Array, NDArray[np.int64]]:
    """Each row's ``q`` quantile of its measured (non-NaN) values, linear between ranks
    (numpy's default), and how many values were measured; NaN for a row with none.

    ``np.nanquantile`` loops over the rows in Python; sorting puts NaN last, so a
    row's measured values are its first ``counted``, and the quantile is read off them.
    """
    ordered = np.sort(values, axis=-1)
    counted = np.sum(np.isfinite(ordered), axis=-1)
    top = np.maximum(counted - 1, 0)
    rank = q * top
    low = np.floor(rank).astype(np.int64)
    high = np.minimum(low + 1, top)
    below = np.take_along_axis(ordered, low[..., None], axis=-1)[..., 0]
    above = np.take_along_axis(ordered, high[..., None], axis=-1)[..., 0]
    out = np.where(counted > 0, below + (above - below) * (rank - low), np.nan)
    return out, counted.astype(np.int64)


def latest(values: Array) -> Array:
    """Each row's last measured (non-NaN) value; NaN for a row with none."""
    finite = np.isfinite(values)
    has = finite.any(axis=1)
    # Index of the last finite value of each row.
    last = values.shape[1] - 1 - np.argmax(finite[:, ::-1], axis=1) if values.shape[1] else np.zeros(0, dtype=int)
    out = np.full(values.shape[0], np.nan)
    rows = np.nonzero(has)[0]
    out[rows] = values[rows, last[rows]]
    return out
