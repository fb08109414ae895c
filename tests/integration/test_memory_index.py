"""Local mode searches an in-process matrix (``pgq.memory.index``): it must answer as Qdrant does.

The expected answers come from qdrant-client itself (``query_points`` on the
same local collection), never from the index under test: the same ids, in
the same order, with the same scores, with and without filters, after a
reopen (the index is rebuilt from what Qdrant stored), after an upsert of a
point that exists, and after retention deleted the oldest contexts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import models

import pgq
from pgq.memory.context import ExecutionContext, traceback_frames
from pgq.memory.embedders import LexicalEmbedder
from pgq.memory.store import ContextStore

pytestmark = [pytest.mark.search]

DATA = Path(__file__).resolve().parents[1] / "data"


def contexts() -> list[ExecutionContext]:
    rows = [json.loads(line) for line in (DATA / "failures.jsonl").read_text().splitlines()]
    return [ExecutionContext(job_id=1 + i // 2, attempt=1 + i % 2, queue="q", task=r["task"],
                             outcome="dead" if i % 3 == 0 else "failed", finished_at=1.7e9 + i,
                             error_type=r["error_type"], message=r["message"], frames=traceback_frames(r["traceback"]))
            for i, r in enumerate(rows)]


def qdrant_answer(store: ContextStore, vector: np.ndarray, k: int, flt: models.Filter | None = None) -> list[tuple[int, int, float]]:
    result = store.client.query_points(store.collection, query=vector.tolist(), limit=k, query_filter=flt, with_payload=True)
    return [(p.payload["job_id"], p.payload["attempt"], round(p.score, 4)) for p in result.points]


def index_answer(store: ContextStore, vector: np.ndarray, k: int, **kwargs: object) -> list[tuple[int, int, float]]:
    return [(h.context.job_id, h.context.attempt, round(h.score, 4)) for h in store.search(vector, k, **kwargs)]  # type: ignore[arg-type]


def same(mine: list[tuple[int, int, float]], theirs: list[tuple[int, int, float]]) -> bool:
    """The same scores in order, and the same points per score (ties may come in any order;
    at the lowest score of the k, which of the tied points made the cut may differ)."""
    if [s for *_, s in mine] != [s for *_, s in theirs]:
        return False
    last = mine[-1][2] if mine else None
    return all({p[:2] for p in mine if p[2] == score} == {p[:2] for p in theirs if p[2] == score}
               for score in {s for *_, s in mine} if score != last)


@pytest.fixture
def settings(tmp_path: Path) -> pgq.Settings:
    return pgq.Settings(memory=True, memory_path=str(tmp_path / "memory"))


def test_the_index_answers_as_qdrant_does_with_filters_after_reopen_and_retention(settings: pgq.Settings) -> None:
    embedder = LexicalEmbedder()
    pool = contexts()
    vectors = embedder.embed(pool)
    store = ContextStore.open(settings, embedder.dimension)
    store.upsert(pool[:200], vectors[:200])
    assert store.index is None  # built at the first search, not at open (a writer never pays for it)
    store.search(vectors[0], 1)
    store.upsert(pool[150:], vectors[150:])  # 50 points written twice: still one each
    assert store.index is not None and len(store.index) == len(pool) == store.count()
    queries = vectors[::37]

    for q in queries:
        assert same(index_answer(store, q, 5), qdrant_answer(store, q, 5))
    job = pool[0].job_id
    not_job = models.Filter(must_not=[models.FieldCondition(key="job_id", match=models.MatchValue(value=job))])
    dead = models.Filter(must=[models.FieldCondition(key="outcome", match=models.MatchAny(any=["dead"]))])
    assert same(index_answer(store, vectors[0], 7, exclude_job=job), qdrant_answer(store, vectors[0], 7, not_job))
    assert same(index_answer(store, vectors[1], 7, outcomes=["dead"]), qdrant_answer(store, vectors[1], 7, dead))
    assert all(h.context.job_id != job for h in store.search(vectors[0], 50, exclude_job=job))
    store.close()

    reopened = ContextStore.open(settings, embedder.dimension)
    for q in queries:
        assert same(index_answer(reopened, q, 5), qdrant_answer(reopened, q, 5))
    assert reopened.index is not None and len(reopened.index) == len(pool)  # rebuilt from what Qdrant stored
    reopened.delete_older_than(1.7e9 + 100)  # the first 100 contexts go
    assert len(reopened.index) == reopened.count() == len(pool) - 100
    for q in queries:
        answer = index_answer(reopened, q, 5)
        assert same(answer, qdrant_answer(reopened, q, 5))
        assert all((job_id - 1) * 2 + attempt - 1 >= 100 for job_id, attempt, _ in answer)
    reopened.close()
