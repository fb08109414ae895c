"""Local mode's index answers exactly as a full scan and a full sort would (no network).

``VectorIndex`` reads only the dimensions a query uses and takes the k best
through a threshold: both are shortcuts, so these tests hold them to the plain
answer (every point scored with one matrix product, every score sorted),
on random sparse and dense vectors, with ties, exclusions and filters.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgq.memory.index import VectorIndex, top_k


def plain_top(scores: np.ndarray, k: int) -> list[float]:
    kept = np.sort(scores[scores != -np.inf])[::-1]
    return [float(s) for s in kept[:k]]


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.sampled_from([-np.inf, -1.0, 0.0, 0.25, 0.5, 0.5, 0.75, 1.0]), min_size=1, max_size=3000),
       k=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_top_k_finds_the_k_best_scores_with_ties_and_exclusions(values: list[float], k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = np.asarray(values, dtype=np.float32)
    scores = np.where(scores == 0.0, rng.random(len(scores), dtype=np.float32), scores)  # plus distinct ones
    k = min(k, len(scores))
    best = top_k(scores, k)
    assert len(best) == k == len(set(best.tolist()))
    got = [float(scores[i]) for i in best]
    assert got == sorted(got, reverse=True)
    finite = plain_top(scores, k)
    assert got[: len(finite)] == finite


def unit_rows(rng: np.random.Generator, n: int, dimension: int, used: int) -> np.ndarray:
    out = np.zeros((n, dimension), dtype=np.float32)
    for row in out:
        slots = rng.choice(dimension, size=used, replace=False)
        row[slots] = rng.choice([-1.0, 1.0], size=used) * rng.integers(1, 4, size=used)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.mark.parametrize("used", [1, 25, 384])  # a one-word query, a lexical one, a sentence model's
def test_the_index_scores_as_a_full_product_and_ranks_as_a_full_sort(used: int) -> None:
    rng = np.random.default_rng(used)
    vectors = unit_rows(rng, 5000, 384, used)
    index = VectorIndex(384)
    ids = [f"p{i}" for i in range(len(vectors))]
    jobs = [i // 2 for i in range(len(vectors))]
    outcomes = ["dead" if i % 3 == 0 else "failed" for i in range(len(vectors))]
    for start in range(0, len(vectors), 700):  # several adds: the matrix grows past its first size
        stop = start + 700
        index.add(ids[start:stop], vectors[start:stop] * 3.0, jobs[start:stop], outcomes[start:stop],
                  list(range(start, min(stop, len(vectors)))))
    for query in vectors[::499]:
        expected = vectors @ query
        assert np.allclose(index.scores(query * 2.0), expected, atol=1e-5)
        found = index.search(query, 10)
        assert np.allclose([s for _, s in found], np.sort(expected)[::-1][:10], atol=1e-5)
        job = jobs[ids.index(found[0][0])]
        dead = index.search(query, 10, exclude_job=job, outcomes=["dead"])
        masked = np.where((np.asarray(jobs) != job) & (np.asarray(outcomes) == "dead"), expected, -np.inf)
        assert np.allclose([s for _, s in dead], np.sort(masked)[::-1][:10], atol=1e-5)
        assert all(jobs[ids.index(i)] != job and outcomes[ids.index(i)] == "dead" for i, _ in dead)


def test_remove_moves_the_last_point_and_keeps_every_answer() -> None:
    rng = np.random.default_rng(7)
    vectors = unit_rows(rng, 300, 384, 20)
    index = VectorIndex(384)
    ids = [f"p{i}" for i in range(300)]
    index.add(ids, vectors, list(range(300)), ["failed"] * 300, [float(i) for i in range(300)])
    index.remove(index.finished_before(100.0) + ["absent"])
    assert len(index) == 200
    for query in vectors[::37]:
        expected = np.sort(vectors[100:] @ query)[::-1][:5]
        assert np.allclose([s for _, s in index.search(query, 5)], expected, atol=1e-5)
        assert all(int(i[1:]) >= 100 for i, _ in index.search(query, 50))


def test_an_empty_index_finds_nothing() -> None:
    index = VectorIndex(384)
    assert index.search(np.ones(384, dtype=np.float32), 5) == []
    assert len(index.scores(np.ones(384, dtype=np.float32))) == 0
