"""The execution memory's reads from Postgres, as contexts and fates.

The statements are ``pgq.queries.MemoryQueries``'s; this module turns their
rows into ``ExecutionContext``s (a job's failed attempt, the dead letters)
and ``Fate``s (how a job stands now). Read only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pgq.memory.context import ExecutionContext, payload_summary, traceback_frames
from pgq.queries import MemoryQueries

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from pgq.settings import Settings


class QueueLike(Protocol):
    """What the memory needs of a ``pgq.Queue`` (a protocol: ``pgq.queue`` delegates to the memory)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def pool(self) -> ConnectionPool[Any]: ...

    def requeue_dead(self, job_ids: Sequence[int] | None = None, *, queue: str | None = None) -> list[int]: ...


@dataclass(frozen=True)
class Fate:
    """How a job stands now: its status, whether any attempt completed, whether it was requeued from the DLQ."""

    status: str
    completed: bool
    requeued: bool


@dataclass(frozen=True)
class DeadJob:
    """One open dead letter with its final attempt's error."""

    job_id: int
    queue: str
    task: str
    died_at: dt.datetime
    context: ExecutionContext


class MemoryReads:
    """The memory's reads for one pgq schema."""

    def __init__(self, schema: str) -> None:
        self.queries = MemoryQueries(schema)

    def attempt_context(self, conn: Any, job_id: int) -> ExecutionContext | None:
        """The context of ``job_id``'s newest failed attempt (else newest attempt); None if it has none."""
        row = self.queries.attempt(conn, job_id)
        if row is None:
            return None
        (jid, attempt, queue, task, outcome, finished, error_type, message, traceback, duration, worker,
         payload) = row
        keys, _ = payload_summary(payload, values=False)
        return ExecutionContext(job_id=jid, attempt=attempt, queue=queue, task=task, outcome=outcome,
                                finished_at=finished, error_type=error_type, message=message,
                                frames=traceback_frames(traceback), duration_ms=duration, worker_id=worker,
                                payload_keys=keys)

    def fates(self, conn: Any, job_ids: Sequence[int]) -> dict[int, Fate]:
        """How each of ``job_ids`` stands now (jobs pruned since are absent)."""
        if not job_ids:
            return {}
        return {row[0]: Fate(row[1], bool(row[2]), bool(row[3])) for row in self.queries.fates(conn, job_ids)}

    def dead_jobs(self, conn: Any, queue: str | None, limit: int) -> list[DeadJob]:
        """Open dead letters, oldest first, with their final attempt's error."""
        out = []
        for job_id, q, task, died, attempt, outcome, error_type, message, traceback in self.queries.dead_jobs(
                conn, queue, limit):
            context = ExecutionContext(job_id=job_id, attempt=attempt, queue=q, task=task, outcome=outcome,
                                       finished_at=died.timestamp(), error_type=error_type, message=message,
                                       frames=traceback_frames(traceback))
            out.append(DeadJob(job_id, q, task, died, context))
        return out
