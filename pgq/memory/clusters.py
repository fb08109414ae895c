"""Clusters of the dead letter queue: "these 340 dead jobs are one SMTP timeout".

Dead jobs are read from Postgres (the truth, not the memory), their final
errors embedded, and grouped online in the order they died: each joins the
nearest cluster whose centroid is at least ``threshold`` alike, else starts
one. Jobs that die later never move earlier ones, so a cluster's id (the job
that started it) stays the same between ``pgq dlq clusters`` and
``pgq dlq requeue --cluster ID`` unless that job left the DLQ.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pgq.db import translated
from pgq.pool import live_connection
from pgq.errors import ValidationError
from pgq.job import validate_queue_name
from pgq.memory.embedders import Embedder, LexicalEmbedder, make_embedder
from pgq.memory.reads import DeadJob, MemoryReads

if TYPE_CHECKING:
    from pgq.memory.reads import QueueLike as Queue

# Cosine similarity to join a cluster with the default (lexical) embedder; each
# embedder has its own (``Embedder.cluster_threshold``, bench/RESULTS.md).
DEFAULT_THRESHOLD = LexicalEmbedder.cluster_threshold
# Most dead jobs read for clustering (the oldest first).
DEFAULT_LIMIT = 100_000


@dataclass(frozen=True)
class Cluster:
    """Dead jobs that failed alike.

    ``id`` is the job that started the cluster; ``representative`` the message
    of the member nearest the centroid.
    """

    id: int
    count: int
    tasks: tuple[str, ...]
    queues: tuple[str, ...]
    error_type: str
    representative: str
    first_seen: dt.datetime
    last_seen: dt.datetime
    job_ids: tuple[int, ...]


def leader_clusters(vectors: np.ndarray[Any, Any], threshold: float) -> list[int]:
    """Online clustering of unit ``vectors`` in order: the label (index of the cluster's first
    member) of each row. A row joins the most similar centroid if at least ``threshold``."""
    labels: list[int] = []
    leaders: list[int] = []
    sums = np.zeros((0, vectors.shape[1]), dtype=np.float64)
    for i, v in enumerate(vectors):
        if leaders:
            norms = np.linalg.norm(sums, axis=1)
            sims = (sums @ v) / np.where(norms > 0, norms, 1.0)
            best = int(np.argmax(sims))
            if sims[best] >= threshold:
                sums[best] += v
                labels.append(leaders[best])
                continue
        leaders.append(i)
        sums = np.vstack([sums, v[None, :].astype(np.float64)])
        labels.append(i)
    return labels


def cluster_dead(dead: Sequence[DeadJob], embedder: Embedder, threshold: float | None = None) -> list[Cluster]:
    """Group ``dead`` (oldest first) into clusters, largest first (``threshold``: default the embedder's)."""
    if not dead:
        return []
    vectors = embedder.embed([d.context for d in dead])
    labels = leader_clusters(vectors, embedder.cluster_threshold if threshold is None else threshold)
    members: dict[int, list[int]] = {}
    for row, label in enumerate(labels):
        members.setdefault(label, []).append(row)
    clusters = []
    for leader, rows in members.items():
        centroid = vectors[rows].mean(axis=0)
        best = rows[int(np.argmax(vectors[rows] @ centroid))]
        group = [dead[r] for r in rows]
        clusters.append(Cluster(
            id=dead[leader].job_id, count=len(rows), tasks=tuple(sorted({d.task for d in group})),
            queues=tuple(sorted({d.queue for d in group})), error_type=dead[best].context.error_type,
            representative=dead[best].context.message, first_seen=min(d.died_at for d in group),
            last_seen=max(d.died_at for d in group), job_ids=tuple(d.job_id for d in group)))
    return sorted(clusters, key=lambda c: (-c.count, c.first_seen, c.id))


def dlq_clusters(queue: Queue, *, queue_name: str | None = None, threshold: float | None = None,
                 limit: int = DEFAULT_LIMIT, embedder: Embedder | None = None) -> list[Cluster]:
    """The clusters of ``queue``'s open dead letters (of ``queue_name`` if given), largest first.

    Reads Postgres only: works with the memory off. ``threshold``: cosine
    similarity in (0, 1] to join a cluster (default: the embedder's, 0.6 for
    the lexical one). ``embedder``: default ``Settings.memory_embedder``'s.

    Raises:
        ValidationError: a bad queue name, threshold or limit.
    """
    if queue_name is not None:
        validate_queue_name(queue_name)
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not 0 < threshold <= 1):
        raise ValidationError(f"threshold must be a number in (0, 1], got {threshold!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000_000:
        raise ValidationError(f"limit must be a whole number from 1 to 10000000, got {limit!r}")
    queries = MemoryReads(queue.settings.schema)
    with translated(queue.settings.database_url), live_connection(queue.pool) as conn:
        dead = queries.dead_jobs(conn, queue_name, limit)
    return cluster_dead(dead, embedder or make_embedder(queue.settings.memory_embedder), threshold)


def requeue_cluster(queue: Queue, cluster_id: int, **options: Any) -> list[int]:
    """Requeue every dead job of the cluster ``cluster_id`` (as ``dlq_clusters`` shows it).

    One ``Queue.requeue_dead`` call: if one of them left the DLQ meanwhile, it
    raises and nothing is requeued (list the clusters again).

    Raises:
        ValidationError: no cluster has that id.
    """
    for cluster in dlq_clusters(queue, **options):
        if cluster.id == cluster_id:
            return queue.requeue_dead(list(cluster.job_ids))
    raise ValidationError(f"no dead letter cluster {cluster_id}: list them with `pgq dlq clusters`")
