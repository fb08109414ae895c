"""Search and clustering quality of the default (lexical) embedder on the labelled set.

``tests/data/failures.jsonl`` holds 288 realistic failures of 24 root causes
(``tests/data/make_failures.py`` explains how they are built). The figures
for every embedder are in ``bench/RESULTS.md`` (``python -m bench.memory_quality``);
these tests hold the default to the goal: precision@5 and cluster purity of at
least 0.9, without putting each failure in a cluster of its own.
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pgq.memory.clusters import leader_clusters
from pgq.memory.context import ExecutionContext, traceback_frames
from pgq.memory.embedders import make_embedder

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module", params=["lexical", pytest.param("minilm", marks=pytest.mark.semantic)])
def labelled(request: pytest.FixtureRequest) -> tuple[np.ndarray, list[str], float]:
    """The set's vectors by the embedder under test, their causes, and that embedder's cluster threshold.

    ``minilm`` (all-MiniLM-L6-v2) runs only with ``pytest --semantic`` and ``pgq[semantic]``
    installed (torch: too big for CI); without the package it fails, it is never skipped.
    """
    rows = [json.loads(line) for line in (DATA / "failures.jsonl").read_text().splitlines()]
    contexts = [ExecutionContext(job_id=i, attempt=1, queue="q", task=r["task"], outcome="failed", finished_at=0.0,
                                 error_type=r["error_type"], message=r["message"], frames=traceback_frames(r["traceback"]))
                for i, r in enumerate(rows)]
    embedder = make_embedder(request.param)
    return embedder.embed(contexts), [r["cause"] for r in rows], embedder.cluster_threshold


def test_the_set_is_big_enough_and_reproducible() -> None:
    spec = importlib.util.spec_from_file_location("make_failures", DATA / "make_failures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.build()
    assert [json.dumps(r, sort_keys=True) for r in rows] == (DATA / "failures.jsonl").read_text().splitlines()
    causes = Counter(r["cause"] for r in rows)
    assert len(rows) >= 200 and len(causes) >= 20
    # The variable parts vary: messages of one cause are not copies of each other.
    assert all(len({r["message"] for r in rows if r["cause"] == c}) >= n // 2 for c, n in causes.items())


def test_precision_at_5_is_at_least_0_9(labelled: tuple[np.ndarray, list[str], float]) -> None:
    vectors, causes, _ = labelled
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    same = 0
    for i, cause in enumerate(causes):
        same += sum(causes[j] == cause for j in np.argsort(-sims[i], kind="stable")[:5])
    assert same / (5 * len(causes)) >= 0.9


def test_dlq_clusters_are_pure_and_not_shattered(labelled: tuple[np.ndarray, list[str], float]) -> None:
    vectors, causes, threshold = labelled
    clusters: dict[int, list[str]] = {}
    for label, cause in zip(leader_clusters(vectors, threshold), causes, strict=True):
        clusters.setdefault(label, []).append(cause)
    purity = sum(Counter(m).most_common(1)[0][1] for m in clusters.values()) / len(causes)
    assert purity >= 0.9
    # Each cause mostly lands in one cluster (inverse purity), and there are not many more clusters than causes.
    biggest: dict[str, int] = {}
    for members in clusters.values():
        for cause, n in Counter(members).items():
            biggest[cause] = max(biggest.get(cause, 0), n)
    assert sum(biggest.values()) / len(causes) >= 0.85
    assert len(clusters) <= 1.5 * len(set(causes))


def test_leader_clusters_keep_earlier_labels_when_more_rows_arrive(labelled: tuple[np.ndarray, list[str], float]) -> None:
    vectors, _, threshold = labelled
    assert leader_clusters(vectors, threshold)[:100] == leader_clusters(vectors[:100], threshold)
