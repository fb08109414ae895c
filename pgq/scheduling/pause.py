"""Pause and resume a queue: ``pgq.pause_queue`` / ``pgq.resume_queue`` and the paused list.

A paused queue's jobs are left out of every claim (``lock_runnable_jobs`` and
``lock_runnable_jobs_by_id`` in Postgres decide); enqueue keeps working. This
module only sends the calls and reads ``paused_queues``; what a pause
guarantees against a claim in flight is the README's ("Pause and resume a
queue").
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pgq.job import validate_queue_name
from pgq.queries import PauseQueries


@dataclass(frozen=True)
class PausedQueue:
    """A queue paused now: since when, by whom (session user, application_name), jobs waiting."""

    queue: str
    paused_at: dt.datetime
    paused_by: str
    paused_by_application: str
    waiting_jobs: int

    def to_dict(self) -> dict[str, Any]:
        return {"queue": self.queue, "paused_at": self.paused_at.isoformat(), "paused_by": self.paused_by,
                "paused_by_application": self.paused_by_application, "waiting_jobs": self.waiting_jobs}


def pause_queue(conn: Any, schema: str, queue: str) -> bool:
    """Pause ``queue`` (``pgq.pause_queue``) on ``conn``; True when it paused it, False when already paused.

    Claims that start after the calling transaction commits take none of its
    jobs; enqueue keeps working; running jobs finish. Raises ``ValidationError``
    for a bad queue name (nothing changes).
    """
    return PauseQueries(schema).pause(conn, validate_queue_name(queue))


def resume_queue(conn: Any, schema: str, queue: str) -> bool:
    """Resume ``queue`` (``pgq.resume_queue``); True when it resumed it, False when it was not paused."""
    return PauseQueries(schema).resume(conn, validate_queue_name(queue))


def paused_queues(conn: Any, schema: str) -> list[PausedQueue]:
    """The queues paused now, by name (``pgq.paused_queues``)."""
    return [PausedQueue(str(r[0]), r[1], str(r[2]), str(r[3]), int(r[4])) for r in PauseQueries(schema).paused(conn)]
