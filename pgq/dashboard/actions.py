"""The dashboard's actions: each one an existing ``pgq.Queue`` call, hence one stored function.

requeue (``requeue_dead_jobs``), purge (``purge_dead_jobs``), drain
(``drain_worker``), evacuate (``evacuate_worker``), pause and resume a queue
(``pause_queue``, ``resume_queue``); a DLQ cluster's requeue or purge is the
same calls on the cluster's job ids. The page adds no second path to the
data: validation and SQL are the ``Queue``'s. This module only turns form
fields (text) into the calls' arguments, or raises ``ValidationError``. The
database login needs ``<schema>_operator`` (db/roles/014.sql).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from pgq.errors import ValidationError
from pgq.memory.clusters import Cluster, dlq_clusters
from pgq.queue import Queue

#: Dead jobs read to cluster the DLQ on the page (the oldest first): clustering costs about
#: 1 ms per dead job (pgq.memory's normalising and embedding; bench/RESULTS.md), so the page
#: clusters on request, at most this many.
CLUSTER_LIMIT = 2_000
#: Most job ids one form may name.
MAX_IDS = 10_000


def parse_ids(values: Sequence[str]) -> list[int]:
    """Job ids from form fields (each a whole number >= 1); at least one."""
    ids = []
    for value in values:
        text = value.strip()
        if not text.isdigit() or not 1 <= int(text) <= 2**63 - 1:
            raise ValidationError(f"a job id is a whole number from 1 to {2**63 - 1}, got {value!r}")
        ids.append(int(text))
    if not ids:
        raise ValidationError("select at least one dead job")
    if len(ids) > MAX_IDS:
        raise ValidationError(f"at most {MAX_IDS} jobs at once, got {len(ids)}")
    return ids


def parse_worker(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ValidationError(f"a worker id is a UUID, got {value!r}") from None


def clusters(queue: Queue) -> list[Cluster]:
    """The DLQ's clusters as the page lists them (``pgq.memory.clusters``: Postgres only), largest first."""
    return dlq_clusters(queue, limit=CLUSTER_LIMIT)


def cluster_job_ids(queue: Queue, cluster_id: str) -> list[int]:
    """The dead jobs of the DLQ cluster ``cluster_id`` as ``clusters`` lists it."""
    (wanted,) = parse_ids([cluster_id])
    for cluster in clusters(queue):
        if cluster.id == wanted:
            return list(cluster.job_ids)
    raise ValidationError(f"no dead letter cluster {wanted}: it changed meanwhile, look at the page again")


def requeue(queue: Queue, job_ids: Sequence[int]) -> list[int]:
    """Requeue dead jobs (dead -> queued); nothing is requeued if one of them is not dead."""
    return queue.requeue_dead(list(job_ids))


def purge(queue: Queue, job_ids: Sequence[int]) -> list[int]:
    """Delete dead jobs, their dead letters and history (``purge_dead_jobs``)."""
    return queue.purge_dead(list(job_ids))


def drain(queue: Queue, worker: str) -> bool:
    return queue.drain_worker(parse_worker(worker))


def evacuate(queue: Queue, worker: str, reason: str) -> bool:
    return queue.evacuate_worker(parse_worker(worker), reason)


def pause(queue: Queue, name: str) -> bool:
    return queue.pause_queue(name)


def resume(queue: Queue, name: str) -> bool:
    return queue.resume_queue(name)
