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

from pgq.db import execute, quote_ident
from pgq.job import validate_queue_name


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


class PauseQueries:
    """The statements of pausing, for one schema (bound parameters, schema quoted once)."""

    def __init__(self, schema: str) -> None:
        s = quote_ident(schema)
        self._pause = f"SELECT {s}.pause_queue(%s::text)"
        self._resume = f"SELECT {s}.resume_queue(%s::text)"
        self._paused = (
            "SELECT queue, paused_at, paused_by, paused_by_application, waiting_jobs"
            f" FROM {s}.paused_queues ORDER BY queue"
        )
        self._resumed_since = f"SELECT EXISTS (SELECT 1 FROM {s}.queue_pauses WHERE resumed_at >= %s::timestamptz)"

    def pause(self, conn: Any, queue: str) -> bool:
        return bool(execute(conn, self._pause, [queue])[0][0])

    def resume(self, conn: Any, queue: str) -> bool:
        return bool(execute(conn, self._resume, [queue])[0][0])

    def paused(self, conn: Any) -> list[PausedQueue]:
        return [PausedQueue(str(r[0]), r[1], str(r[2]), str(r[3]), int(r[4])) for r in execute(conn, self._paused)]

    def resumed_since(self, conn: Any, since: dt.datetime) -> bool:
        """Whether a queue was resumed at or after ``since`` (the Redis reconciler's last horizon)."""
        return bool(execute(conn, self._resumed_since, [since])[0][0])


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
    return PauseQueries(schema).paused(conn)
