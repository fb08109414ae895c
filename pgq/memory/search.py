"""Search the execution memory: past executions like a job's failure, or like free text.

``Memory`` pairs the Qdrant store (what failed, how alike) with Postgres (how
each of those jobs ended: a retry succeeded, it was requeued and completed,
it is dead). Scores are cosine similarities of the embedder's vectors (1 =
the same normalised failure). ``clusters`` groups the dead letter queue.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgq.db import translated
from pgq.pool import live_connection
from pgq.errors import ConfigurationError, JobNotFound, ValidationError
from pgq.memory.context import ExecutionContext, text_context
from pgq.memory.embedders import Embedder, make_embedder
from pgq.memory.reads import Fate, MemoryReads
from pgq.memory.store import ContextStore, Hit

if TYPE_CHECKING:
    from pgq.memory.reads import QueueLike as Queue

MAX_K = 1000


@dataclass(frozen=True)
class Similar:
    """One past execution near the query, and how its job ended.

    ``ended``: ``retry succeeded``, ``requeued, then completed``, ``completed``,
    ``dead``, ``retrying``, ``queued``, ``running``, ``cancelled`` or ``pruned``
    (the job is gone from Postgres).
    """

    score: float
    job_id: int
    attempt: int
    task: str
    queue: str
    outcome: str
    error_type: str
    message: str
    finished_at: dt.datetime
    status: str | None
    ended: str


def ended(fate: Fate | None) -> str:
    """How a job that had a failed attempt stands now, in words."""
    if fate is None:
        return "pruned"
    if fate.status == "completed":
        return "requeued, then completed" if fate.requeued else "retry succeeded"
    return fate.status


def _check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ValidationError(f"k must be a whole number from 1 to {MAX_K}, got {k!r}")
    return k


class Memory:
    """The execution memory of one queue's database and schema.

    Args:
        queue: the ``pgq.Queue`` (its settings and connection pool).
        store: an open store (default: opened from the settings).
        embedder: default ``make_embedder(settings.memory_embedder)``.

    Raises:
        ConfigurationError: the memory is off (``PGQ_MEMORY`` / ``PGQ_QDRANT_URL``).
        ContextStoreUnavailable, ContextStoreMismatch: see ``ContextStore.open``.
    """

    def __init__(self, queue: Queue, *, store: ContextStore | None = None, embedder: Embedder | None = None) -> None:
        settings = queue.settings
        if store is None and not settings.memory_enabled:
            raise ConfigurationError("the execution memory is off: set PGQ_MEMORY=true (local store in "
                                     "PGQ_MEMORY_PATH) or PGQ_QDRANT_URL")
        self.queue = queue
        self.embedder = embedder or make_embedder(settings.memory_embedder)
        self.store = store or ContextStore.open(settings, self.embedder.dimension)
        self._owns_store = store is None
        self.queries = MemoryReads(settings.schema)

    def _read(self, fn: Any, *args: Any) -> Any:
        with translated(self.queue.settings.database_url), live_connection(self.queue.pool) as conn:
            return fn(conn, *args)

    def similar(self, job_id: int, k: int = 5) -> list[Similar]:
        """The ``k`` past executions of *other* jobs nearest ``job_id``'s newest failed attempt.

        Raises:
            JobNotFound: the job has no finished attempt in Postgres nor in the memory.
            ValidationError: a bad ``job_id`` or ``k``.
        """
        if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id < 1:
            raise ValidationError(f"job_id must be a positive whole number, got {job_id!r}")
        context = self._read(self.queries.attempt_context, job_id)
        if context is None:
            stored = self.store.contexts_of(job_id)
            if not stored:
                raise JobNotFound(f"job {job_id} has no finished attempt (in Postgres or in the execution memory)")
            context = stored[-1]
        return self._answer(context, _check_k(k), exclude_job=job_id)

    def similar_text(self, text: str, k: int = 5) -> list[Similar]:
        """The ``k`` past executions nearest free text (an error message, ``Type: message``)."""
        if not isinstance(text, str) or not text.strip():
            raise ValidationError("text must be a non-empty string")
        return self._answer(text_context(text), _check_k(k), exclude_job=None)

    def _answer(self, context: ExecutionContext, k: int, *, exclude_job: int | None) -> list[Similar]:
        vector = self.embedder.embed([context])[0]
        hits: list[Hit] = self.store.search(vector, k, exclude_job=exclude_job)
        fates = self._read(self.queries.fates, sorted({h.context.job_id for h in hits}))
        out = []
        for hit in hits:
            c = hit.context
            fate = fates.get(c.job_id)
            out.append(Similar(score=round(hit.score, 4), job_id=c.job_id, attempt=c.attempt, task=c.task, queue=c.queue,
                               outcome=c.outcome, error_type=c.error_type, message=c.message,
                               finished_at=dt.datetime.fromtimestamp(c.finished_at, dt.UTC),
                               status=fate.status if fate else None, ended=ended(fate)))
        return out

    def close(self) -> None:
        """Close the store if this object opened it."""
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
