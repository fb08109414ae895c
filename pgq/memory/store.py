"""The Qdrant store of execution contexts: local (embedded) or a server.

``ContextStore.open(settings, dimension)`` opens qdrant-client's local mode in
``Settings.memory_location()`` (no server; one process at a time), or the server
at ``PGQ_QDRANT_URL``, and makes sure the collection exists with the
embedder's vector size. Points are keyed by (job, attempt, finish time), so
writing a context twice keeps one point. What goes in is the writer's
business, what comes out the search's.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pgq.errors import ConfigurationError, ContextStoreMismatch, ContextStoreUnavailable
from pgq.memory.context import ExecutionContext
from pgq.memory.index import VectorIndex
from pgq.settings import redact_url

if TYPE_CHECKING:
    from pgq.settings import Settings

log = logging.getLogger("pgq.memory")

# Point ids are UUIDs derived from the context (Qdrant accepts ints or UUIDs).
_NAMESPACE = uuid.UUID("6f1f0c1e-2b1d-4c55-9a35-7c1b6a5f0d12")


@dataclass(frozen=True)
class Hit:
    """One stored context near a query, with its cosine similarity (1 = same)."""

    score: float
    context: ExecutionContext


def point_id(context: ExecutionContext) -> str:
    """The point id of a context: the same attempt written twice is one point."""
    return str(uuid.uuid5(_NAMESPACE, f"{context.job_id}:{context.attempt}:{context.finished_at:.6f}"))


def _check_free(path: str, where: str) -> None:
    """Raise ``ContextStoreUnavailable`` if another client holds the local store.

    qdrant-client finds that out too, but leaks the lock file's handle when it does.
    """
    lock_path = os.path.join(path, ".lock")
    if not os.path.exists(lock_path):
        return
    import portalocker

    with open(lock_path, "rb+") as handle:
        try:
            portalocker.lock(handle, portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING)
        except portalocker.exceptions.LockException as exc:
            raise ContextStoreUnavailable(
                f"the execution memory's {where} is held by another process (a running worker?): a local store "
                "serves one process at a time; set PGQ_QDRANT_URL to share one between workers and the CLI") from exc
        portalocker.unlock(handle)


def _local_persistence(client: Any, collection: str) -> Any:
    """Local mode's SQLite persistence of ``collection`` (None if qdrant-client's internals moved)."""
    try:
        persistence = client._client.collections[collection].storage
    except (AttributeError, KeyError, TypeError):
        return None
    return persistence if isinstance(getattr(persistence, "storage", None), sqlite3.Connection) else None


def _write_ahead(persistence: Any) -> None:
    """Switch local mode's SQLite file to WAL with synchronous=NORMAL.

    Local mode commits every point on its own; with SQLite's defaults each
    commit waits for an fsync (5.6 ms a point here, and the fsyncs compete
    with Postgres's on the same disk). WAL + NORMAL cannot corrupt the file
    and costs 0.8 ms a point; a power cut may lose the last contexts, which
    the memory can afford (Postgres keeps every attempt).
    """
    try:
        persistence.storage.execute("PRAGMA journal_mode=WAL")
        persistence.storage.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error as exc:  # keep SQLite's defaults
        log.debug("execution memory: local store left with SQLite's defaults (%s)", exc)


class _OneTransaction:
    """Stands in for local mode's SQLite connection during one upsert.

    qdrant-client's local mode writes each point in a ``with connection:``
    block of its own, that is one commit per point (~0.06 ms of CPU each, a
    fifth of a context's cost). While this stands in, those blocks neither
    commit nor roll back, so the batch is one transaction that ``upsert``
    commits, or rolls back whole: a failed batch leaves no point of it in the
    file (the writer then reopens the store, which reloads the file).
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> _OneTransaction:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.connection, name)


def _models() -> Any:
    try:
        from qdrant_client import models
    except ImportError as exc:
        raise ConfigurationError("the execution memory needs qdrant-client: pip install 'pgq[memory]'") from exc
    return models


class ContextStore:
    """One Qdrant collection of execution contexts.

    Raises (every method):
        ContextStoreUnavailable: Qdrant could not be reached or failed; the cause is ``__cause__``.
    """

    def __init__(self, client: Any, collection: str, dimension: int, where: str) -> None:
        self.client = client
        self.collection = collection
        self.dimension = dimension
        self.where = where
        # Local mode searches this in-process matrix (Qdrant's local search is a Python scan),
        # built at the first search (a worker's writer never searches: it never pays for it);
        # a server searches its own HNSW index.
        self.local = where.startswith("local")
        self.index: VectorIndex | None = None
        # Local mode's SQLite persistence, written one transaction per batch (``_OneTransaction``).
        self.persistence: Any = None

    @classmethod
    def open(cls, settings: Settings, dimension: int) -> ContextStore:
        """Connect (or open the local directory) and ensure the collection.

        Raises:
            ContextStoreUnavailable: the server does not answer, or the local
                directory is held by another process.
            ContextStoreMismatch: the collection exists with another vector size.
        """
        models = _models()
        from qdrant_client import QdrantClient

        url = settings.qdrant_url
        path = settings.memory_location()
        where = f"Qdrant at {redact_url(url)}" if url else f"local store {path}"
        if not url:
            _check_free(path, where)
        try:
            client = QdrantClient(url=url, timeout=5, check_compatibility=False) if url else QdrantClient(path=path)
        except Exception as exc:  # portalocker / OS errors: the directory is taken or unusable
            raise ContextStoreUnavailable(
                f"cannot open the execution memory's {where}: {exc} (a local store serves one process; "
                "set PGQ_QDRANT_URL to share one between workers and the CLI)") from exc
        store = cls(client, settings.memory_collection, dimension, where)
        try:
            store._ensure_collection(models)
        except BaseException:
            store.close()
            raise
        if not url:
            # These reach into qdrant-client's local internals: if they moved, its own behaviour stays.
            store.persistence = _local_persistence(client, settings.memory_collection)
            if store.persistence is not None:
                _write_ahead(store.persistence)
        return store

    def _load_index(self) -> VectorIndex:
        """Read every stored vector into a ``VectorIndex`` (local mode, at the first search)."""
        index = VectorIndex(self.dimension)
        offset = None
        while True:
            points, offset = self._call("read the stored vectors", self.client.scroll, self.collection, limit=10_000,
                                        offset=offset, with_payload=["job_id", "outcome", "finished_at"], with_vectors=True)
            if points:
                index.add([str(p.id) for p in points], np.asarray([p.vector for p in points], dtype=np.float32),
                          [int(p.payload["job_id"]) for p in points], [str(p.payload["outcome"]) for p in points],
                          [float(p.payload["finished_at"]) for p in points])
            if offset is None:
                return index

    def _ensure_collection(self, models: Any) -> None:
        exists = self._call("check the collection", self.client.collection_exists, self.collection)
        if not exists:
            self._call("create the collection", self.client.create_collection, self.collection,
                       vectors_config=models.VectorParams(size=self.dimension, distance=models.Distance.COSINE))
            self._call("index finished_at", self._index, models)
            return
        info = self._call("read the collection", self.client.get_collection, self.collection)
        vectors = info.config.params.vectors
        size = getattr(vectors, "size", None)
        distance = getattr(vectors, "distance", None)
        if size != self.dimension or distance != models.Distance.COSINE:
            raise ContextStoreMismatch(
                f"collection {self.collection!r} in the {self.where} holds vectors of size {size} "
                f"({distance}), the embedder writes {self.dimension} (Cosine): set PGQ_MEMORY_COLLECTION "
                "to another name, or delete the collection")

    def _index(self, models: Any) -> None:
        # Local mode ignores payload indexes (and warns): only a server needs one.
        if not self.local:
            self.client.create_payload_index(self.collection, "finished_at", models.PayloadSchemaType.FLOAT)
            self.client.create_payload_index(self.collection, "job_id", models.PayloadSchemaType.INTEGER)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ContextStoreMismatch, ConfigurationError):
            raise
        except Exception as exc:
            raise ContextStoreUnavailable(f"execution memory: could not {what} in the {self.where}: {exc}") from exc

    def upsert(self, contexts: Sequence[ExecutionContext], vectors: np.ndarray[Any, Any]) -> None:
        """Write ``contexts`` with their vectors (one request)."""
        if not contexts:
            return
        if vectors.shape != (len(contexts), self.dimension):
            raise ContextStoreMismatch(f"vectors of shape {vectors.shape} for {len(contexts)} contexts of size {self.dimension}")
        models = _models()
        points = [models.PointStruct(id=point_id(c), vector=v.tolist(), payload=c.to_payload())
                  for c, v in zip(contexts, vectors, strict=True)]
        if self.persistence is None:
            self._call("write contexts", self.client.upsert, self.collection, points=points, wait=True)
        else:
            connection = self.persistence.storage
            self.persistence.storage = _OneTransaction(connection)
            try:
                with connection:  # one commit for the batch; a failure rolls all of it back
                    self._call("write contexts", self.client.upsert, self.collection, points=points, wait=True)
            except sqlite3.Error as exc:  # the commit itself failed
                raise ContextStoreUnavailable(f"execution memory: could not write contexts in the {self.where}: {exc}") from exc
            finally:
                self.persistence.storage = connection
        if self.index is not None:
            self.index.add([str(p.id) for p in points], vectors, [c.job_id for c in contexts],
                           [c.outcome for c in contexts], [c.finished_at for c in contexts])

    def search(self, vector: np.ndarray[Any, Any], k: int, *, exclude_job: int | None = None,
               outcomes: Sequence[str] | None = None) -> list[Hit]:
        """The ``k`` stored contexts nearest ``vector`` (best first).

        Raises:
            ContextStoreMismatch: ``vector`` is not of the collection's size.
        """
        if np.shape(vector) != (self.dimension,):
            raise ContextStoreMismatch(f"a search vector of shape {np.shape(vector)} in a collection of size {self.dimension}")
        if self.local:
            if self.index is None:
                self.index = self._load_index()
            return self._search_index(self.index, vector, k, exclude_job, outcomes)
        models = _models()
        must_not = [models.FieldCondition(key="job_id", match=models.MatchValue(value=exclude_job))] if exclude_job else []
        must = [models.FieldCondition(key="outcome", match=models.MatchAny(any=list(outcomes)))] if outcomes else []
        query_filter = models.Filter(must=must, must_not=must_not) if (must or must_not) else None
        result = self._call("search", self.client.query_points, self.collection, query=vector.tolist(), limit=k,
                            query_filter=query_filter, with_payload=True)
        return [Hit(float(p.score), ExecutionContext.from_payload(p.payload)) for p in result.points]

    def _search_index(self, index: VectorIndex, vector: np.ndarray[Any, Any], k: int, exclude_job: int | None,
                      outcomes: Sequence[str] | None) -> list[Hit]:
        found = index.search(vector, k, exclude_job=exclude_job or None, outcomes=outcomes)
        if not found:
            return []
        records = self._call("read contexts", self.client.retrieve, self.collection, ids=[i for i, _ in found],
                             with_payload=True)
        payloads = {str(r.id): r.payload for r in records}
        return [Hit(score, ExecutionContext.from_payload(payloads[i])) for i, score in found if i in payloads]

    def contexts_of(self, job_id: int) -> list[ExecutionContext]:
        """Every stored context of one job, oldest attempt first."""
        models = _models()
        flt = models.Filter(must=[models.FieldCondition(key="job_id", match=models.MatchValue(value=job_id))])
        points, _ = self._call("read a job's contexts", self.client.scroll, self.collection, scroll_filter=flt,
                               limit=1000, with_payload=True)
        found = [ExecutionContext.from_payload(p.payload) for p in points]
        return sorted(found, key=lambda c: (c.finished_at, c.attempt))

    def delete_older_than(self, cutoff: float) -> None:
        """Delete contexts that finished before ``cutoff`` (seconds since the epoch)."""
        models = _models()
        flt = models.Filter(must=[models.FieldCondition(key="finished_at", range=models.Range(lt=cutoff))])
        self._call("delete old contexts", self.client.delete, self.collection,
                   points_selector=models.FilterSelector(filter=flt), wait=True)
        if self.index is not None:
            self.index.remove(self.index.finished_before(cutoff))

    def count(self) -> int:
        """How many contexts are stored."""
        return int(self._call("count", self.client.count, self.collection, exact=True).count)

    def close(self) -> None:
        """Close the client (a local store's directory is free again)."""
        try:
            self.client.close()
        except Exception:  # closing a broken client: nothing left to release
            pass
