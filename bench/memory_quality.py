"""Search and clustering quality of the execution memory's embedders on the labelled set.

``python -m bench.memory_quality`` reads ``tests/data/failures.jsonl`` (built by
``tests/data/make_failures.py``: 288 failures, 24 root causes) and prints, for
each embedder it can load, precision@5 (of each failure's 5 nearest others,
the share with the same cause) and the DLQ clustering's purity (share of
failures in a cluster whose majority cause is theirs), inverse purity (share
of failures in the biggest cluster of their cause) and cluster count, at a
few thresholds. ``raw`` is the lexical embedder without normalisation (ids
and numbers kept), to show what normalising buys.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pgq.memory.clusters import leader_clusters
from pgq.memory.context import ExecutionContext, traceback_frames
from pgq.memory.embedders import Embedder, LexicalEmbedder, SentenceEmbedder

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "failures.jsonl"


def load(path: Path = DATA) -> tuple[list[ExecutionContext], list[str]]:
    contexts, labels = [], []
    for i, line in enumerate(path.read_text().splitlines()):
        row = json.loads(line)
        contexts.append(ExecutionContext(job_id=i + 1, attempt=1, queue="default", task=row["task"], outcome="failed",
                                         finished_at=float(i), error_type=row["error_type"], message=row["message"],
                                         frames=traceback_frames(row["traceback"])))
        labels.append(row["cause"])
    return contexts, labels


def precision_at_k(vectors: np.ndarray[Any, Any], labels: Sequence[str], k: int = 5) -> float:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    hits = 0
    for i in range(len(labels)):
        nearest = np.argsort(-sims[i], kind="stable")[:k]
        hits += sum(labels[j] == labels[i] for j in nearest)
    return hits / (k * len(labels))


def purity(assigned: Sequence[int], labels: Sequence[str]) -> tuple[float, float, int]:
    """(purity, inverse purity, clusters)."""
    clusters: dict[int, list[str]] = {}
    for a, label in zip(assigned, labels, strict=True):
        clusters.setdefault(a, []).append(label)
    pure = sum(Counter(members).most_common(1)[0][1] for members in clusters.values()) / len(labels)
    by_cause: dict[str, Counter[int]] = {}
    for a, label in zip(assigned, labels, strict=True):
        by_cause.setdefault(label, Counter())[a] += 1
    inverse = sum(c.most_common(1)[0][1] for c in by_cause.values()) / len(labels)
    return pure, inverse, len(clusters)


class RawLexical(LexicalEmbedder):
    """The lexical embedder fed the raw message (no normalisation): the baseline."""

    name = "raw"

    def embed(self, contexts: Sequence[ExecutionContext]) -> np.ndarray[Any, Any]:
        raw = [ExecutionContext(job_id=c.job_id, attempt=c.attempt, queue=c.queue, task=c.task, outcome=c.outcome,
                                finished_at=c.finished_at, error_type=c.error_type, message=c.message,
                                frames=c.frames, normalised=c.message.lower()) for c in contexts]
        return super().embed(raw)


class MessageOnly(LexicalEmbedder):
    """The lexical embedder given the message alone (no error type, no frames), as ``--text`` is."""

    name = "lexical, message only"

    def embed(self, contexts: Sequence[ExecutionContext]) -> np.ndarray[Any, Any]:
        bare = [ExecutionContext(job_id=c.job_id, attempt=c.attempt, queue=c.queue, task=c.task, outcome=c.outcome,
                                 finished_at=c.finished_at, message=c.message) for c in contexts]
        return super().embed(bare)


def embedders() -> list[Embedder]:
    found: list[Embedder] = [LexicalEmbedder(), MessageOnly(), RawLexical()]
    try:
        found.append(SentenceEmbedder())
    except Exception as exc:  # not installed here: say so in the output
        print(f"minilm: not measured ({exc})")
    return found


def main() -> None:
    contexts, labels = load()
    print(f"{len(contexts)} failures, {len(set(labels))} causes")
    for embedder in embedders():
        started = time.perf_counter()
        vectors = embedder.embed(contexts)
        per = (time.perf_counter() - started) * 1000 / len(contexts)
        print(f"{embedder.name}: precision@5 = {precision_at_k(vectors, labels):.3f} ({per:.2f} ms per context)")
        for threshold in (0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9):
            pure, inverse, n = purity(leader_clusters(vectors, threshold), labels)
            print(f"  threshold {threshold}: purity {pure:.3f}, inverse purity {inverse:.3f}, {n} clusters")


if __name__ == "__main__":
    main()
