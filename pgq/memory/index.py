"""Local mode's search index: the stored vectors as one float32 matrix in the process.

qdrant-client's local mode answers a query by scoring every point in Python
and normalising the whole matrix again on each query (80–380 ms at 100k
points, bench/RESULTS.md). ``VectorIndex`` keeps the unit vectors once, with
the two payload fields searches filter on (job id, outcome) and the finish
time retention deletes by, and answers with one matrix-vector product and a
partial sort. Qdrant stays the store (what persists, and the payloads); this
is a cache of its vectors, filled from it at the process's first search and
kept in step by every write and delete of the same process (a local store
has one process).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

_START = 1024  # rows allocated first; doubled when full


class VectorIndex:
    """Unit vectors by point id, searched by cosine similarity (a dot product of unit vectors)."""

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension
        self._vectors = np.zeros((_START, dimension), dtype=np.float32)
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
        self._vectors = np.resize(self._vectors, (size, self.dimension))
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
        for point, vector, job, outcome, at in zip(ids, units, jobs, outcomes, finished, strict=True):
            row = self._rows.get(point)
            if row is None:
                row = len(self._ids)
                self._rows[point] = row
                self._ids.append(point)
            self._vectors[row] = vector
            self._jobs[row] = job
            self._outcomes[row] = self._code(outcome)
            self._finished[row] = at

    def remove(self, ids: Sequence[str]) -> None:
        """Drop points (the last row moves into each hole)."""
        for point in ids:
            row = self._rows.pop(point, None)
            if row is None:
                continue
            last = len(self._ids) - 1
            moved = self._ids.pop()
            if row != last:
                self._ids[row] = moved
                self._rows[moved] = row
                for column in (self._vectors, self._jobs, self._outcomes, self._finished):
                    column[row] = column[last]

    def finished_before(self, cutoff: float) -> list[str]:
        """Ids of the points whose context finished before ``cutoff``."""
        rows = np.flatnonzero(self._finished[: len(self._ids)] < cutoff)
        return [self._ids[int(r)] for r in rows]

    def search(self, query: np.ndarray[Any, Any], k: int, *, exclude_job: int | None = None,
               outcomes: Sequence[str] | None = None) -> list[tuple[str, float]]:
        """The ``k`` ids nearest ``query`` with their cosine similarity, best first."""
        n = len(self._ids)
        if n == 0 or k < 1:
            return []
        q = np.asarray(query, dtype=np.float32).ravel()
        norm = float(np.linalg.norm(q))
        if norm > 0:
            q = q / norm
        scores = self._vectors[:n] @ q
        if exclude_job is not None:
            scores[self._jobs[:n] == exclude_job] = -np.inf
        if outcomes is not None:
            wanted = [self._codes[o] for o in outcomes if o in self._codes]
            scores[~np.isin(self._outcomes[:n], wanted)] = -np.inf
        top = min(k, n)
        best = np.argpartition(-scores, top - 1)[:top]
        best = best[np.argsort(-scores[best], kind="stable")]
        return [(self._ids[int(r)], float(scores[r])) for r in best if scores[r] != -np.inf]
