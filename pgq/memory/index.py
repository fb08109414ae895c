"""Local mode's search index: the stored vectors as one float32 matrix in the process.

qdrant-client's local mode answers a query by scoring every point in Python
and normalising the whole matrix again on each query (80–380 ms at 100k
points, bench/RESULTS.md). ``VectorIndex`` keeps the unit vectors once, with
the two payload fields searches filter on (job id, outcome) and the finish
time retention deletes by. Qdrant stays the store (what persists, and the
payloads); this is a cache of its vectors, filled from it at the process's
first search and kept in step by every write and delete of the same process
(a local store has one process).

The matrix is stored dimension by dimension (one contiguous row of all
points' values per dimension), so a query reads only the dimensions where it
is not zero: a lexical query (feature hashing) has 12–48 of 384, so a search
reads about a fifteenth of the matrix, and is still exact (a sentence model's
dense query reads all of it). The k best come
from a threshold that cannot miss any of them (the k-th best of the blocks'
maxima), then a sort of the few points above it, instead of a partial sort of
every score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

_START = 1024  # points allocated first; doubled when full
_BLOCK = 256  # points per block when looking for the k-th best score


def top_k(scores: np.ndarray[Any, Any], k: int) -> np.ndarray[Any, Any]:
    """Positions of the ``k`` highest ``scores`` (float32, ``-inf`` = excluded), best first.

    Exact: k blocks each hold a score at least the k-th best of the blocks' maxima,
    so every one of the k best scores is at least that. Equal scores come in position
    order; which of several points tied at the k-th score make the cut is unspecified.
    """
    n = len(scores)
    full = (n // _BLOCK) * _BLOCK
    if full // _BLOCK > k:
        maxima = scores[:full].reshape(-1, _BLOCK).max(axis=1)
        floor = np.partition(maxima, len(maxima) - k)[len(maxima) - k]
        candidates = np.flatnonzero(scores >= floor)
    else:
        candidates = np.arange(n)
    if len(candidates) > 4 * k:  # many ties at the floor: narrow them down first
        keep = np.argpartition(-scores[candidates], k - 1)[:k]
        candidates = np.sort(candidates[keep])
    order = np.argsort(-scores[candidates], kind="stable")[:k]
    return candidates[order]


class VectorIndex:
    """Unit vectors by point id, searched by cosine similarity (a dot product of unit vectors)."""

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension
        # One row per dimension, one column per point (see the module's docstring).
        self._values = np.zeros((dimension, _START), dtype=np.float32)
        self._jobs = np.zeros(_START, dtype=np.int64)
        self._outcomes = np.zeros(_START, dtype=np.int16)
        self._finished = np.zeros(_START, dtype=np.float64)
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}
        self._codes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def _grow(self, needed: int) -> None:
        size = len(self._jobs)
        if needed <= size:
            return
        while size < needed:
            size *= 2
        n = len(self._ids)
        values = np.zeros((self.dimension, size), dtype=np.float32)
        values[:, :n] = self._values[:, :n]
        self._values = values
        self._jobs = np.resize(self._jobs, size)
        self._outcomes = np.resize(self._outcomes, size)
        self._finished = np.resize(self._finished, size)

    def _code(self, outcome: str) -> int:
        return self._codes.setdefault(outcome, len(self._codes))

    def add(self, ids: Sequence[str], vectors: np.ndarray[Any, Any], jobs: Sequence[int], outcomes: Sequence[str],
            finished: Sequence[float]) -> None:
        """Add or replace points (``vectors`` one row per id; normalised here)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        units = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
        self._grow(len(self._ids) + len(ids))
        rows = []
        for point, job, outcome, at in zip(ids, jobs, outcomes, finished, strict=True):
            row = self._rows.get(point)
            if row is None:
                row = len(self._ids)
                self._rows[point] = row
                self._ids.append(point)
            rows.append(row)
            self._jobs[row] = job
            self._outcomes[row] = self._code(outcome)
            self._finished[row] = at
        self._values[:, rows] = units.T

    def remove(self, ids: Sequence[str]) -> None:
        """Drop points (the last point moves into each hole)."""
        for point in ids:
            row = self._rows.pop(point, None)
            if row is None:
                continue
            last = len(self._ids) - 1
            moved = self._ids.pop()
            if row != last:
                self._ids[row] = moved
                self._rows[moved] = row
                self._values[:, row] = self._values[:, last]
                for column in (self._jobs, self._outcomes, self._finished):
                    column[row] = column[last]

    def finished_before(self, cutoff: float) -> list[str]:
        """Ids of the points whose context finished before ``cutoff``."""
        rows = np.flatnonzero(self._finished[: len(self._ids)] < cutoff)
        return [self._ids[int(r)] for r in rows]

    def scores(self, query: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Every point's cosine similarity to ``query`` (float32, in point order)."""
        n = len(self._ids)
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        q = np.asarray(query, dtype=np.float32).ravel()
        norm = float(np.linalg.norm(q))
        if norm > 0:
            q = q / norm
        scores = np.zeros(n, dtype=np.float32)
        term = np.empty(n, dtype=np.float32)
        # numpy's own loops, not BLAS: OpenBLAS splits a long vector over threads that,
        # on a busy machine, it then waits for (measured: 0.7 ms or 40-100 ms of CPU per
        # query at random, bench/RESULTS.md); these take ~1.5 ms at 100,000 points.
        for d in np.flatnonzero(q):
            np.multiply(self._values[d, :n], q[d], out=term)
            np.add(scores, term, out=scores)
        return scores

    def search(self, query: np.ndarray[Any, Any], k: int, *, exclude_job: int | None = None,
               outcomes: Sequence[str] | None = None) -> list[tuple[str, float]]:
        """The ``k`` ids nearest ``query`` with their cosine similarity, best first."""
        n = len(self._ids)
        if n == 0 or k < 1:
            return []
        scores = self.scores(query)
        if exclude_job is not None:
            scores[self._jobs[:n] == exclude_job] = -np.inf
        if outcomes is not None:
            wanted = [self._codes[o] for o in outcomes if o in self._codes]
            scores[~np.isin(self._outcomes[:n], wanted)] = -np.inf
        best = top_k(scores, min(k, n))
        return [(self._ids[int(r)], float(scores[r])) for r in best if scores[r] != -np.inf]
