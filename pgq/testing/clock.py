"""A controllable clock for tests: "an hour passes" without sleeping.

pgq's time is the database's ``now()``. The stored functions take a ``p_now``
argument, but a worker never passes one: its claims, outcomes and retries
use the server clock, and PostgreSQL's ``now()`` cannot be moved. So
``QueueClock.advance(d)`` moves the queue's past instead: in one transaction
it moves every timestamp stored in the pgq schema ``d`` earlier (``run_at`` of
delayed jobs and retries, the schedules' next ticks, rate-limit refills,
finished times, ...). To every stored function that reads the clock that is
the same as ``d`` having passed. What it does not move: the workers' rows and
health samples (a worker is a process that lives in real time: its heartbeats
keep their pace, so an advance never makes a live worker stale), time in your
own tables, timestamps inside JSON (payloads, results, snapshots), and a Redis
mirror's copy (its reconciler re-reads Postgres).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import TYPE_CHECKING

from pgq.db import translated
from pgq.errors import ValidationError
from pgq.scheduling.cron import register_periodic
from pgq.queries import KitQueries

if TYPE_CHECKING:
    from pgq.queue import Queue

# The longest one advance: far enough for any schedule, short of timestamp overflow.
MAX_ADVANCE = dt.timedelta(days=366 * 100)


def interval(value: object, name: str) -> dt.timedelta:
    """``value`` (seconds, or a ``timedelta``) as a ``timedelta`` from 0 to ``MAX_ADVANCE``.

    Raises:
        ValidationError: not a number or timedelta, not finite, negative, or too long.
    """
    if isinstance(value, dt.timedelta):
        delta = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        if not 0 <= value <= MAX_ADVANCE.total_seconds():
            raise ValidationError(f"{name} must be from 0 to 100 years ({MAX_ADVANCE.total_seconds():.0f} seconds), "
                                  f"got {value!r}")
        delta = dt.timedelta(seconds=value)
    else:
        raise ValidationError(f"{name} must be a number of seconds or a datetime.timedelta, got {value!r}")
    if not dt.timedelta(0) <= delta <= MAX_ADVANCE:
        raise ValidationError(f"{name} must be from 0 to 100 years (time only moves forward), got {delta!r}")
    return delta


class QueueClock:
    """The clock of one queue's database in a test (the pytest fixture ``pgq_clock``).

    ``now()`` is the database's ``now()``; ``advance(seconds)`` makes that much time
    pass for the queue (see the module docstring for how). ``advanced`` is the total.
    Advance between runs, not while a worker holds jobs: its own running
    attempts would be moved too.
    """

    def __init__(self, queue: Queue) -> None:
        from pgq.queue import Queue

        if not isinstance(queue, Queue):
            raise ValidationError(f"queue must be a pgq.Queue, got {type(queue).__name__}")
        self.queue = queue
        self.queries = KitQueries(queue.settings.schema)
        self.advanced = dt.timedelta(0)

    def __repr__(self) -> str:
        return f"<pgq.testing.QueueClock advanced={self.advanced}>"

    def now(self) -> dt.datetime:
        """The database's ``now()``."""
        with translated(self.queue.settings.database_url), self.queue.pool.connection() as conn:
            return self.queries.now(conn)

    def advance(self, by: float | dt.timedelta) -> dt.timedelta:
        """Let ``by`` (seconds, or a ``timedelta``) pass for the queue; commits.

        First stores the queue's ``@periodic`` schedules (idempotent, as a worker
        does at start) so that their ticks move with the clock. Delayed jobs and
        retries whose ``run_at`` the move reaches become due (and LISTENing workers
        of their queues are woken); schedules whose next tick it reaches tick at
        the next ``run_until_empty`` (or maintenance round).

        Returns:
            ``by`` as a ``timedelta``.
        Raises:
            ValidationError: ``by`` is not a number of seconds or a timedelta from 0 to 100 years;
                nothing changed.
        """
        delta = interval(by, "by")
        with translated(self.queue.settings.database_url), self.queue.pool.connection() as conn:
            with conn.transaction():
                register_periodic(conn, self.queue.settings.schema, self.queue.periodic_schedules)
                if delta:
                    self.queries.shift_back(conn, delta)
        self.advanced += delta
        return delta

    def advance_to_next_tick(self, schedule: str | None = None) -> dt.timedelta:
        """Advance to the next tick of ``schedule`` (a name; None: of any schedule), so that it is due.

        Returns:
            how far the clock moved (0 when the tick was already due).
        Raises:
            ValidationError: no enabled schedule (of that name) has a next tick; nothing changed.
        """
        if schedule is not None and not isinstance(schedule, str):
            raise ValidationError(f"schedule must be a schedule name or None, got {schedule!r}")
        with translated(self.queue.settings.database_url), self.queue.pool.connection() as conn:
            register_periodic(conn, self.queue.settings.schema, self.queue.periodic_schedules)
            tick, count = self.queries.next_tick(conn, schedule)
            now = self.queries.now(conn)
        if tick is None or not count:
            which = f"schedule {schedule!r}" if schedule is not None else "any schedule"
            raise ValidationError(f"{which} has no next tick: no such enabled schedule (register it with "
                                  "@q.periodic or q.schedule())")
        return self.advance(max(tick - now, dt.timedelta(0)))
